"""The operating-time limit: per method and caller, ten baskets over a sliding window.

Each call adds its cost (seconds of server time) to the current basket; calls
cheaper than ``min_charge_s`` are not charged. Once the window's sum exceeds
``limit_s`` the next call of that method is refused (429
``OPERATION_TIME_LIMIT``) until enough old baskets drop out. ``reset_at`` is
when the oldest basket drops out, which the envelope reports as
``operating_reset_at``.
"""

from __future__ import annotations

import math

from sandbox.clock import Clock

__all__ = ["OperatingLedger"]

BASKETS = 10


class OperatingLedger:
    def __init__(
        self, *, limit_s: float, window_s: float, clock: Clock, min_charge_s: float = 0.1
    ) -> None:
        if limit_s <= 0 or window_s <= 0:
            raise ValueError("limit_s and window_s must be positive")
        self._limit = limit_s
        self._basket_s = window_s / BASKETS
        self._clock = clock
        self._min_charge = min_charge_s
        self._baskets: dict[str, dict[int, float]] = {}

    def _current(self) -> int:
        return math.floor(self._clock.time() / self._basket_s)

    def _live(self, key: str) -> dict[int, float]:
        baskets = self._baskets.get(key)
        if not baskets:
            return {}
        oldest = self._current() - BASKETS + 1
        for index in [i for i in baskets if i < oldest]:
            del baskets[index]
        return baskets

    def used(self, key: str) -> float:
        """Seconds charged to ``key`` within the window."""
        return sum(self._live(key).values())

    def blocked(self, key: str) -> bool:
        return self.used(key) > self._limit

    def charge(self, key: str, seconds: float) -> float:
        """Charge one call; returns what was charged (0 below the minimum)."""
        if seconds < self._min_charge:
            return 0.0
        baskets = self._baskets.setdefault(key, {})
        index = self._current()
        baskets[index] = baskets.get(index, 0.0) + seconds
        return seconds

    def reset_at(self, key: str) -> float:
        """Unix time when the oldest charged basket leaves the window (a window ahead if none)."""
        baskets = self._live(key)
        oldest = min(baskets) if baskets else self._current()
        return (oldest + BASKETS) * self._basket_s

    def snapshot(self) -> dict[str, float]:
        """Seconds used per key, for the control endpoint."""
        return {key: round(self.used(key), 6) for key in list(self._baskets)}

    def reset(self) -> None:
        self._baskets.clear()
