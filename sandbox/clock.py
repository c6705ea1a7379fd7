"""Time sources: the real one, and a manual one that tests move by hand.

Everything in the sandbox that reads the time takes a ``Clock``, so the
limiters and the ``time`` envelope can be checked exactly without sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Wall time (unix seconds, for envelopes and baskets) and a monotonic time (for the bucket)."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when ``advance`` is called; both readings move together.

    It is safe to advance from a test thread while the server thread reads it.
    """

    def __init__(self, start: float = 1_735_689_600.0) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._mono = 1_000.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._wall += seconds
            self._mono += seconds
