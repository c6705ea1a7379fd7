"""Packs jobs into batches: as many as one call may carry when it may go.

A group fills first, then asks the limiter, and once let go takes what
arrived meanwhile and leaves at once: the portal counts a request from when it
arrives, and the limiter from when it lets it go, so nothing may wait between
the two (a group that lingered after its leave would reach the portal later
than planned, and calls that lingered at the start would arrive bunched with
the ones after them). While the worker waits for the portal's bucket or budget
deliveries pile up, so each call leaves as full as it can be. Jobs that
cannot travel in a batch go alone.

A group that is not full waits for its next job up to `linger_s`, and up to
`FILL_FOR_LINGERS` times that in all: while deliveries keep coming (a queue
with a backlog, a worker just started) the group fills, and a lone command
still leaves after one linger. Two gaps do not end a group: a linger that
ends more than a linger late (the worker's loop was busy: a start with a
backlog parses thousands of deliveries at once, not the producers), and any
gap while the portal's queue has a backlog on the broker (`more_coming`:
more deliveries are on their way, however unevenly they arrive).

A portal whose requests are more than 20 lingers apart waits longer
(`linger_for`): a twentieth of the time between its requests, so that a
group fills for at most one such interval, where a call that leaves half
full would cost a whole one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from worker.flow.jobs import Job

__all__ = ["FILL_FOR_LINGERS", "Batcher", "linger_for"]

# A group waits at most this many lingers in all for jobs that keep arriving.
FILL_FOR_LINGERS = 20


def linger_for(linger_s: float, rate_per_s: float) -> float:
    """The linger of a portal that allows ``rate_per_s`` requests a second:
    ``linger_s``, or a twentieth of the interval between its requests when that
    is longer. A linger of 0 (no waiting) stays 0."""
    if linger_s <= 0:
        return 0.0
    return max(linger_s, 1 / (FILL_FOR_LINGERS * rate_per_s))


T = TypeVar("T")


class Batcher(Generic[T]):
    """Collects ready jobs and hands them out in groups, one call's worth each.

    `next_group` fills a group, waiting at most `linger_s` for each next job;
    `admit(wanted)` then waits until a call may be sent and returns a ticket
    that says how many commands it may carry (`count(ticket)`). Jobs beyond
    that stay first in line for the next group.
    """

    def __init__(
        self,
        *,
        admit: Callable[[int], Awaitable[T]],
        count: Callable[[T], int],
        size: int,
        linger_s: float,
        batchable: Callable[[Job], bool],
        more_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self._admit = admit
        self._more_coming = more_coming
        self._count = count
        self._size = size
        self._linger_s = linger_s
        self._batchable = batchable
        self._ready: asyncio.Queue[Job] = asyncio.Queue()
        self._alone: deque[Job] = deque()
        self._held: deque[Job] = deque()  # taken for a group its ticket had no room for

    def add(self, job: Job) -> None:
        self._ready.put_nowait(job)

    def __len__(self) -> int:
        return self._ready.qsize() + len(self._alone) + len(self._held)

    def take_all(self) -> list[Job]:
        """Remove every job not yet in a group (to hand them back)."""
        jobs = [*self._held, *self._alone]
        self._held.clear()
        self._alone.clear()
        while not self._ready.empty():
            jobs.append(self._ready.get_nowait())
        return jobs

    async def next_group(self) -> tuple[list[Job], T]:
        """The next group and its ticket: a group filled, then the limiter's leave,
        then what came meanwhile; the call is to go right away."""
        if self._alone:
            first = self._alone.popleft()
        elif self._held:
            first = self._held.popleft()
        else:
            first = await self._ready.get()
        if self._size == 1 or not self._batchable(first):
            return [first], await self._admit(1)
        group = [first]
        await self._fill(group, self._size, linger=True)
        ticket = await self._admit(self._size)
        room = max(1, self._count(ticket))
        await self._fill(group, room, linger=False)
        if len(group) > room:
            self._held.extendleft(reversed(group[room:]))
            del group[room:]
        return group, ticket

    async def _fill(self, group: list[Job], room: int, *, linger: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger_s * FILL_FOR_LINGERS
        while len(group) < room:
            if self._held:
                job = self._held.popleft()
            elif not self._ready.empty():
                job = self._ready.get_nowait()
            else:
                timeout = min(self._linger_s, deadline - loop.time()) if linger else 0.0
                if timeout <= 0:
                    return
                waited_from = loop.time()
                try:
                    job = await asyncio.wait_for(self._ready.get(), timeout)
                except TimeoutError:
                    # Ran out late: the loop was busy (parsing a backlog of
                    # deliveries), so the gap was the worker's, not the producers'.
                    late = loop.time() - waited_from >= 2 * timeout
                    if late or self._more_coming():
                        continue  # within the deadline
                    return
            if self._batchable(job):
                group.append(job)
            else:
                self._alone.append(job)
