"""What one call of a method costs in operating time: a fixed figure or a range.

A real portal's cost of an update is not fixed: the method reference's own
example reports 3.19 s of processing for one ``crm.item.update``, and
automation rules and the number of fields change it from call to call. A
range ``LOW-HIGH`` draws each call's cost uniformly from it, with a random
source the caller owns (seeded by ``--random-seed``), so a run can be
repeated exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["OperatingCost"]


@dataclass(frozen=True, slots=True)
class OperatingCost:
    """Seconds of server time charged for one call, drawn from ``[low_s, high_s]``."""

    low_s: float
    high_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low_s) and math.isfinite(self.high_s)):
            raise ValueError("an operating cost must be a finite number of seconds")
        if not 0 <= self.low_s <= self.high_s:
            raise ValueError(f"expected 0 <= low <= high seconds, got {self}")

    @classmethod
    def fixed(cls, seconds: float) -> OperatingCost:
        return cls(seconds, seconds)

    @classmethod
    def parse(cls, text: str) -> OperatingCost:
        """``"0.5"`` is a fixed cost; ``"0.05-0.8"`` a range drawn per call."""
        low, dash, high = text.strip().partition("-")
        try:
            if not dash:
                return cls.fixed(float(low))
            return cls(float(low), float(high))
        except ValueError as exc:
            raise ValueError(f"expected SECONDS or LOW-HIGH seconds, got {text!r}") from exc

    @property
    def mean_s(self) -> float:
        return (self.low_s + self.high_s) / 2

    def draw(self, rng: random.Random) -> float:
        """One call's cost; a fixed cost draws nothing, so it leaves ``rng`` as it was."""
        if self.low_s == self.high_s:
            return self.low_s
        return rng.uniform(self.low_s, self.high_s)

    def __str__(self) -> str:
        if self.low_s == self.high_s:
            return f"{self.low_s:g}"
        return f"{self.low_s:g}-{self.high_s:g}"
