"""The limiter: paces requests to the portal's bucket and each method to its operating-time budget.

Waiting here is never a failure: callers wait for a token or for budget, and
rate-limit answers are fed back so the next wait is longer.
"""

from worker.limiter.backends import MemoryBackend, StateBackend
from worker.limiter.bucket import PacerState, RequestPacer
from worker.limiter.clock import Clock, FakeClock, SystemClock

__all__ = [
    "Clock",
    "FakeClock",
    "MemoryBackend",
    "PacerState",
    "RequestPacer",
    "StateBackend",
    "SystemClock",
]
