"""What a response says about a method's operating time: the ``time`` block's two fields.

``operating`` is the seconds the method has ACCUMULATED in the portal's
current window (not this call's own time) and ``operating_reset_at`` the unix
time when the oldest one-minute basket drops out; either may be missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["OperatingReport"]


@dataclass(frozen=True, slots=True)
class OperatingReport:
    """One method call's view of its operating-time window, as the portal reported it."""

    operating: float | None = None
    reset_at: float | None = None

    @classmethod
    def from_time(cls, block: Mapping[str, object] | None) -> OperatingReport:
        """Read a ``time`` block (top level, or one ``result_time`` entry of a batch)."""
        if not block:
            return cls()
        return cls(_number(block.get("operating")), _number(block.get("operating_reset_at")))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
