"""What the portal said about each call or batch command, as plain values.

A command's answer holds either its ``result`` or a ``CommandError`` (or says
the portal never ran it), plus the ``time`` block the limiter learns from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["NOT_RUN", "BatchAnswer", "CommandAnswer", "CommandError", "TimeInfo"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class TimeInfo:
    """A ``time`` block; each value is None when the portal left it out.

    ``operating`` is the seconds the method has accumulated in the portal's
    10-minute window (not this call's own cost), ``operating_reset_at`` the
    unix time when the oldest one-minute basket drops out, ``processing`` and
    ``duration`` this request's own seconds.
    """

    operating: float | None = None
    operating_reset_at: float | None = None
    processing: float | None = None
    duration: float | None = None

    @classmethod
    def parse(cls, block: Any) -> TimeInfo | None:
        """The block of an envelope or of ``result_time[name]``; None if there is none."""
        if not isinstance(block, Mapping):
            return None
        return cls(
            operating=_number(block.get("operating")),
            operating_reset_at=_number(block.get("operating_reset_at")),
            processing=_number(block.get("processing")),
            duration=_number(block.get("duration")),
        )


@dataclass(frozen=True, slots=True)
class CommandError:
    """One batch command's entry in ``result_error``.

    The portal gives a command inside a batch no HTTP status of its own (the
    batch answers 200), so there is none here; ``ACCESS_DENIED`` for item
    rights and for a free plan can only be told apart by the description.
    """

    code: str
    description: str


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    """The outcome of one command.

    Exactly one of three cases holds:

    - ``ok``: the portal ran it; ``result`` is what it returned (``error`` None);
    - ``error`` is set: the portal refused or failed it;
    - ``ran`` is False: the portal did not run it (``halt`` stopped the batch at
      an earlier failure, or the answer does not mention this name); it was
      not applied.
    """

    result: Any = None
    error: CommandError | None = None
    time: TimeInfo | None = None
    ran: bool = True

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None


NOT_RUN = CommandAnswer(ran=False)  # the answer of every command the portal did not run


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """Every requested name, in request order, with its answer; ``time`` is the batch's own."""

    commands: Mapping[str, CommandAnswer]
    time: TimeInfo | None = None
