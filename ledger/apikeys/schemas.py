"""API key bodies."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ledger.schemas import Strict


class ApiKeyCreate(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
    role: Literal["admin", "operator", "reader", "auditor"]
