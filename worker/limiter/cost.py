"""Learning a per-command cost from samples: quick to rise, slow to fall.

A cost that is underestimated overspends the budget, so a higher sample is
taken at once and a lower one only moves the estimate part of the way.
"""

from __future__ import annotations

__all__ = ["learn"]


def learn(current: float | None, sample: float, *, fall: float = 0.25) -> float:
    """The new estimate after ``sample``; ``fall`` is how far a lower sample pulls it down."""
    sample = max(0.0, sample)
    if current is None or sample >= current:
        return sample
    return current + fall * (sample - current)
