"""A backend whose operations in flight are counted, so that a fake clock can wait for them.

``FakeClock.settle`` decides that nothing can run when the event loop's run
queue is empty. A Redis answer on its way is not in that queue, so a test over
Redis registers ``busy`` with the clock, and time never moves while an
operation is still waiting for Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from worker.limiter import StateBackend

S = TypeVar("S")
R = TypeVar("R")


class Tracked(Generic[S]):
    """Passes every operation to ``backend`` and knows how many have not returned yet."""

    def __init__(self, backend: StateBackend[S]) -> None:
        self.backend = backend
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def modify(self, key: str, change: Callable[[S | None], tuple[S, R]]) -> R:
        self._running += 1
        self._idle.clear()
        try:
            return await self.backend.modify(key, change)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def busy(self) -> bool:
        """Wait until no operation is in flight; ``True`` if one was."""
        if self._idle.is_set():
            return False
        await self._idle.wait()
        return True
