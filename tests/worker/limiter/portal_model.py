"""A small model of the portal's two limits on a fake clock, for the limiter's simulations.

It follows the facts the worker relies on: a leaky bucket (a request that
would lift the level above the burst is refused and adds nothing), and per
method ten baskets over a sliding window (a call is refused once the sum is
above the limit; calls under 0.1 s are not charged; the reported
``operating`` is the sum after the call, ``reset_at`` when the oldest basket
drops out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from worker.limiter import FakeClock, OperatingReport


@dataclass
class BucketModel:
    clock: FakeClock
    burst: int = 50
    drain_per_s: float = 2.0
    level: float = 0.0
    at: float = 0.0
    refused: int = 0

    def arrive(self) -> bool:
        now = self.clock.monotonic()
        self.level = max(0.0, self.level - (now - self.at) * self.drain_per_s)
        self.at = now
        if self.level + 1 > self.burst + 1e-9:
            self.refused += 1
            return False
        self.level += 1
        return True


@dataclass
class OperatingModel:
    clock: FakeClock
    limit_s: float = 12.0
    window_s: float = 60.0
    cost_s: float = 0.2
    baskets: dict[int, float] = field(default_factory=dict)
    refused: int = 0
    charged_calls: int = 0

    @property
    def basket_s(self) -> float:
        return self.window_s / 10

    def _current(self) -> int:
        return math.floor(self.clock.time() / self.basket_s)

    def used(self) -> float:
        oldest = self._current() - 9
        self.baskets = {i: s for i, s in self.baskets.items() if i >= oldest}
        return sum(self.baskets.values())

    def reset_at(self) -> float:
        self.used()
        return (min(self.baskets, default=self._current()) + 10) * self.basket_s

    def call(self) -> OperatingReport | None:
        """One command: its report, or ``None`` for 429 OPERATION_TIME_LIMIT."""
        if self.used() > self.limit_s:
            self.refused += 1
            return None
        if self.cost_s >= 0.1:
            index = self._current()
            self.baskets[index] = self.baskets.get(index, 0.0) + self.cost_s
            self.charged_calls += 1
        return OperatingReport(operating=round(self.used(), 6), reset_at=self.reset_at())
