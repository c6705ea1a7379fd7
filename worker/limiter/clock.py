"""Time for the limiter: the machine's clocks, and a fake one that tests move by hand.

The limiter never reads the time or sleeps on its own; it asks a ``Clock``.
Its state is kept in unix seconds (``time``): that is what the portal's
``operating_reset_at`` is given in, and the only clock that means the same in
every process sharing a portal's state. ``monotonic`` measures how long a
caller waited, and ``sleep`` is how the limiter waits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "sleep_or_wake"]


class Clock(Protocol):
    """What the limiter needs of time."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clocks and the event loop's sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when a test advances it; sleepers wake in deadline order.

    ``time()`` is ``epoch + monotonic()``. The default epoch is a multiple of
    600, so one-minute and six-second baskets start at ``monotonic() == 0``.
    """

    def __init__(self, *, start: float = 0.0, epoch: float = 1_800_000_000.0) -> None:
        self._now = start
        self._epoch = epoch
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._unseen: list[Callable[[], Awaitable[bool]]] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def step_time(self, seconds: float) -> None:
        """Step the wall clock (``time``) by ``seconds``, back if negative; ``monotonic`` stays."""
        self._epoch += seconds

    def next_wakeup(self) -> float | None:
        """The earliest deadline of a task still sleeping, if any."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline and letting it run."""
        target = self._now + seconds
        await self.settle()
        while (deadline := self.next_wakeup()) is not None and deadline <= target:
            _, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            future.set_result(None)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def advance_to_next(self) -> bool:
        """Jump to the next sleeper's deadline; ``False`` when nothing sleeps."""
        await self.settle()
        deadline = self.next_wakeup()
        if deadline is None:
            return False
        await self.advance(deadline - self._now)
        return True

    def wait_also_for(self, busy: Callable[[], Awaitable[bool]]) -> None:
        """Make ``settle`` wait for work the event loop's run queue does not show, too.

        ``busy`` waits until that work (a request to a real server, say) is done
        and tells whether there was any. A backend doing I/O registers one, so
        that time never moves while one of its answers is on the way.
        """
        self._unseen.append(busy)

    async def settle(self, max_rounds: int = 100_000) -> None:
        """Let every task that can run do so without time moving."""
        while True:
            await _run_ready(max_rounds)
            if not any([await busy() for busy in self._unseen]):
                return

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def _run_ready(max_rounds: int) -> None:
    # asyncio's run queue tells when nothing else is ready; loops without one get 50 rounds.
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    for done in range(max_rounds):
        await asyncio.sleep(0)
        if (ready is not None and not ready) or (ready is None and done >= 50):
            return


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event) -> None:
    """Sleep ``seconds`` on ``clock``, or less if ``wake`` is set first."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)
