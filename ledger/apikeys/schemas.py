"""API key bodies."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ledger.core.roles import Role
from ledger.core.schemas import Strict


class ApiKeyCreate(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
    role: Role
