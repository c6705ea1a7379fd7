"""The worker's model of one method's operating-time window: ten baskets, as the portal keeps them.

Bitrix24 sums a method's server time in ten baskets over a sliding window and
reports only the total (``operating``) and when the oldest basket drops out
(``operating_reset_at``). Knowing the total is not enough to plan: when a
basket drops out, only what it held comes back. So the worker keeps its own
baskets, puts each increase of the reported total into the current one, and
trusts the portal's total and reset time over its own whenever they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BASKETS", "Baskets"]

BASKETS = 10
_EPSILON = 1e-9


@dataclass(slots=True)
class Baskets:
    """Seconds charged per basket; basket ``i`` covers ``[phase + i*size, phase + (i+1)*size)``."""

    size_s: float
    grace_s: float = 0.0
    phase: float | None = None
    charged: dict[int, float] = field(default_factory=dict)

    def index(self, at: float) -> int:
        return math.floor((at - (self.phase or 0.0)) / self.size_s)

    def drops_at(self, index: int) -> float:
        """When basket ``index`` leaves the window, plus the grace kept for clock skew."""
        return (self.phase or 0.0) + (index + BASKETS) * self.size_s + self.grace_s

    def expire(self, now: float) -> None:
        for index in [i for i in self.charged if self.drops_at(i) <= now]:
            del self.charged[index]

    def used(self, now: float) -> float:
        return sum(s for i, s in self.charged.items() if self.drops_at(i) > now)

    def charge(self, now: float, seconds: float) -> None:
        if seconds > 0:
            index = self.index(now)
            self.charged[index] = self.charged.get(index, 0.0) + seconds

    def align(self, reset_at: float) -> None:
        """Take the basket grid from a reported reset time and forget baskets already gone."""
        if self.phase is None:
            self.phase = reset_at % self.size_s
        oldest = round((reset_at - self.phase) / self.size_s) - BASKETS
        for index in [i for i in self.charged if i < oldest]:
            del self.charged[index]

    def reconcile(self, now: float, reported: float, *, may_shrink: bool) -> float:
        """Make the model's total equal the portal's; returns reported minus modelled.

        Growth goes into the current basket. A smaller reported total is only
        believed when ``may_shrink`` (a basket dropped out since the last
        report, or the model is known to be off); otherwise the report is older
        than what the model already holds and is ignored.
        """
        self.expire(now)
        difference = reported - self.used(now)
        if difference > _EPSILON:
            self.charge(now, difference)
        elif difference < -_EPSILON and may_shrink:
            self._trim(-difference)
        return difference

    def first_room(
        self, now: float, room_s: float, need_s: float, *, pending_s: float = 0.0
    ) -> tuple[float, float] | None:
        """The first time from ``now`` with ``need_s`` of ``room_s`` free, and the amount free then.

        ``pending_s`` (calls in flight) is counted as if charged now. ``None``
        when even an empty window has not ``need_s`` free.
        """
        held = {i: s for i, s in self.charged.items() if self.drops_at(i) > now}
        current = self.index(now)
        held[current] = held.get(current, 0.0) + pending_s
        free = room_s - sum(held.values())
        if free + _EPSILON >= need_s:
            return now, free
        for index in sorted(held):
            free += held[index]
            if free + _EPSILON >= need_s:
                return max(now, self.drops_at(index)), free
        return None

    def next_drop(self, now: float) -> float | None:
        live = [i for i in self.charged if self.drops_at(i) > now]
        return self.drops_at(min(live)) if live else None

    def _trim(self, seconds: float) -> None:
        for index in sorted(self.charged):
            taken = min(seconds, self.charged[index])
            self.charged[index] -= taken
            seconds -= taken
            if self.charged[index] <= _EPSILON:
                del self.charged[index]
            if seconds <= _EPSILON:
                return
