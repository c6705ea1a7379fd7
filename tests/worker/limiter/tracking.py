"""A backend whose operations in flight are counted, so that a fake clock can wait for them.

``FakeClock.settle`` decides that nothing can run when the event loop's run
queue is empty. A Redis answer on its way is not in that queue, so a test over
Redis registers ``busy`` with the clock, and time never moves while an
operation is still waiting for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from worker.limiter import StateBackend

S = TypeVar("S")
R = TypeVar("R")


class InFlight:
    """How many awaited operations have not returned yet, for a fake clock's ``busy``."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def counted(self) -> AsyncIterator[None]:
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def busy(self) -> bool:
        """Wait until nothing is in flight; ``True`` if something was."""
        if self._idle.is_set():
            return False
        await self._idle.wait()
        return True


class Tracked(Generic[S]):
    """Passes every operation to ``backend`` and knows how many have not returned yet."""

    def __init__(self, backend: StateBackend[S]) -> None:
        self.backend = backend
        self._in_flight = InFlight()
        self.busy = self._in_flight.busy

    async def modify(self, key: str, change: Callable[[S | None], tuple[S, R]]) -> R:
        async with self._in_flight.counted():
            return await self.backend.modify(key, change)
