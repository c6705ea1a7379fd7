"""Where the limiter keeps its state: one value per key, changed atomically.

The algorithms (``bucket``, ``operating``) are pure functions of a state
value; a backend only stores the values and applies a change without another
caller interleaving. The in-memory backend serves one process; the Redis
backend (a compare-and-set around read-change-write) lets several replicas
pace one portal together. A change may be applied more than once before it
is stored, so it must not act outside the value it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["StateBackend"]

S = TypeVar("S")
R = TypeVar("R")


class StateBackend(Protocol[S]):
    """Stores one state value per key and applies changes to it atomically."""

    async def modify(self, key: str, change: Callable[[S | None], tuple[S, R]]) -> R:
        """Apply ``change`` to the value at ``key`` (``None`` when unset) and store the new value.

        Returns the second item of what ``change`` returned.
        """
        ...
