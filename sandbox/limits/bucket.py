"""The request-rate limit: a leaky bucket per portal.

Each admitted request adds 1; the level drains at ``drain_per_s``. A request
that would lift the level above ``burst`` is refused (the caller answers 503
``QUERY_LIMIT_EXCEEDED``) and adds nothing, so with the cloud's 50 and 2/s
the 51st request of a burst is refused and one more fits every half second.
"""

from __future__ import annotations

from sandbox.clock import Clock

__all__ = ["LeakyBucket"]


class LeakyBucket:
    def __init__(self, *, burst: int, drain_per_s: float, clock: Clock) -> None:
        if burst < 1 or drain_per_s <= 0:
            raise ValueError("burst must be >= 1 and drain_per_s > 0")
        self._burst = burst
        self._drain = drain_per_s
        self._clock = clock
        self._level = 0.0
        self._at = clock.monotonic()

    def _drain_to_now(self) -> None:
        now = self._clock.monotonic()
        if now > self._at:
            self._level = max(0.0, self._level - (now - self._at) * self._drain)
        self._at = now

    def try_acquire(self) -> bool:
        """Count one request if it fits; ``False`` means refuse it."""
        self._drain_to_now()
        if self._level + 1.0 > self._burst + 1e-9:
            return False
        self._level += 1.0
        return True

    @property
    def level(self) -> float:
        """Requests currently in the bucket."""
        self._drain_to_now()
        return self._level

    def reset(self) -> None:
        self._level = 0.0
        self._at = self._clock.monotonic()
