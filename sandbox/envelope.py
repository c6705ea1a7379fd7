"""Response bodies: the success envelope with its ``time`` block, and the error envelope.

``operating`` is what the method has accumulated in the current window (not
this call's own time) and ``operating_reset_at`` when the oldest basket
drops out. ``processing`` is the simulated cost of the call when one is
configured, otherwise the time the sandbox really spent.
"""

from __future__ import annotations

import json
from datetime import timezone
from typing import Any

from sandbox.errors import RestError
from sandbox.values import format_datetime

__all__ = ["dumps", "error_body", "success_body", "time_block"]


def time_block(
    *,
    start: float,
    finish: float,
    processing: float,
    operating: float,
    operating_reset_at: float,
    tz: timezone,
) -> dict[str, Any]:
    return {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": processing,
        "date_start": format_datetime(start, tz),
        "date_finish": format_datetime(finish, tz),
        "operating": round(operating, 6),
        "operating_reset_at": int(operating_reset_at),
    }


def success_body(
    result: Any, time: dict[str, Any], *, total: int | None = None, next_: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"result": result}
    if next_ is not None:
        body["next"] = next_
    if total is not None:
        body["total"] = total
    body["time"] = time
    return body


def error_body(error: RestError) -> dict[str, Any]:
    """Only the first error is ever reported, and without a ``time`` block."""
    return {"error": error.code, "error_description": error.description}


def dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
