"""JSON responses of the API."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Response

T = TypeVar("T")
log = structlog.get_logger("ledger.http")


def json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(value),
        status_code=status,
        media_type="application/json",
        headers=headers or {},
    )
