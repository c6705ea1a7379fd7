"""What the portal has seen, readable over the control endpoint."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Counters", "saving"]

# Set while one request is handled: whether it saved an item (nested batch commands
# included). Each request is handled in a task of its own, so requests side by side
# never see each other's.
_SAVED: ContextVar[list[bool] | None] = ContextVar("sandbox_saved", default=None)


@contextmanager
def saving() -> Iterator[list[bool]]:
    """Around one request: yields a list that holds True once the request saved an item."""
    saved: list[bool] = []
    token = _SAVED.set(saved)
    try:
        yield saved
    finally:
        _SAVED.reset(token)


@dataclass(slots=True)
class Counters:
    requests: int = 0
    in_flight: int = 0  # requests taken in and not yet answered (a client may have gone)
    query_limit_rejections: int = 0  # 503 QUERY_LIMIT_EXCEEDED
    operation_limit_rejections: int = 0  # 429 OPERATION_TIME_LIMIT, nested commands included
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)  # per method, nested commands included
    saves: int = 0  # items written by crm.item.add and crm.item.update
    unchanged_updates: int = 0  # updates that changed nothing, so saved nothing
    disconnects: int = 0  # requests carried out whose connection closed without an answer
    html_answers: int = 0  # requests answered with an HTML page instead (not in `requests`)
    # operating seconds charged since the start, per caller and method: unlike the
    # window's sum, it never drops, so a benchmark can tell what each window used
    operating_charged_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    # wall-clock (Unix) arrival of the first and the latest request, so a benchmark can
    # tell a client's start-up from its pacing; None until the first request
    first_request_at: float | None = None
    last_request_at: float | None = None

    def saved(self) -> None:
        """Count one item written, for the request being handled too (`saving`)."""
        self.saves += 1
        marks = _SAVED.get()
        if marks is not None and not marks:
            marks.append(True)

    def arrived(self) -> None:
        """Count one request taken in."""
        now = time.time()
        if self.first_request_at is None:
            self.first_request_at = now
        self.last_request_at = now
        self.requests += 1
        self.in_flight += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "query_limit_rejections": self.query_limit_rejections,
            "operation_limit_rejections": self.operation_limit_rejections,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "calls": dict(self.calls),
            "saves": self.saves,
            "unchanged_updates": self.unchanged_updates,
            "disconnects": self.disconnects,
            "html_answers": self.html_answers,
            "operating_charged_s": {k: round(v, 6) for k, v in self.operating_charged_s.items()},
            "first_request_at": self.first_request_at,
            "last_request_at": self.last_request_at,
        }
