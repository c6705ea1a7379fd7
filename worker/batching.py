"""Packs jobs into batches: up to a size, waiting a short linger to fill one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from worker.jobs import Job

__all__ = ["Batcher"]


class Batcher:
    """Collects ready jobs and hands them to `dispatch` in groups.

    A group closes when it reaches `size()` jobs or `linger_s` after its first
    job, whichever comes first. `size` is asked per group, so the limiter can
    shrink batches as the portal's budget runs low. Jobs that cannot travel in a
    batch are dispatched alone.
    """

    def __init__(
        self,
        *,
        dispatch: Callable[[list[Job]], Awaitable[None]],
        size: Callable[[], int],
        linger_s: float,
        batchable: Callable[[Job], bool],
        max_in_flight: int = 4,
    ) -> None:
        self._dispatch = dispatch
        self._size = size
        self._linger_s = linger_s
        self._batchable = batchable
        self._ready: asyncio.Queue[Job] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, job: Job) -> None:
        self._ready.put_nowait(job)

    def __len__(self) -> int:
        return self._ready.qsize()

    def take_all(self) -> list[Job]:
        """Remove every job not yet dispatched (to hand them back)."""
        jobs = []
        while not self._ready.empty():
            jobs.append(self._ready.get_nowait())
        return jobs

    async def run(self) -> None:
        """Form and dispatch groups until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            first = await self._ready.get()
            group = [first]
            if self._batchable(first):
                size = max(1, self._size())
                deadline = loop.time() + self._linger_s
                while len(group) < size:
                    timeout = deadline - loop.time()
                    if timeout <= 0 and self._ready.empty():
                        break
                    try:
                        job = await asyncio.wait_for(self._ready.get(), max(timeout, 0))
                    except TimeoutError:
                        break
                    if self._batchable(job):
                        group.append(job)
                    else:
                        self._spawn([job], hold_slot=False)
            self._spawn(group)

    def _spawn(self, group: list[Job], *, hold_slot: bool = True) -> None:
        task = asyncio.create_task(self._send(group, hold_slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, group: list[Job], hold_slot: bool) -> None:
        try:
            await self._dispatch(group)
        finally:
            if hold_slot:
                self._slots.release()

    async def wait_idle(self) -> None:
        """Wait for the groups already dispatched to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
