"""The worker's side of bulk jobs: results written in groups, aborts looked up.

Every command of a job writes its result before its delivery is acked, so a
write is on the way of every such command. Results that come together are
written together (one transaction or one Redis round trip), and each waits
only for its own group. A store that fails is tried again, with a pause,
until it answers: the delivery stays unacked meanwhile, as it does when the
broker does not confirm an event. Aborted jobs are read every second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from worker.bulk.store import JobStore, JobStoreError
from worker.flow.ledger import JobResult

__all__ = ["ABORTS_READ_S", "JobLedger"]

log = structlog.get_logger("worker.bulk")

ABORTS_READ_S = 1.0  # how often the aborted jobs are read
_IDLE_CHECK_S = 3600.0  # how often jobs past their retention are forgotten


class JobLedger:
    def __init__(
        self, store: JobStore, *, retention_s: float, pause: Callable[[int], float] | None = None
    ) -> None:
        self.store = store
        self._retention_s = retention_s
        self._pause = pause or (lambda failures: min(0.1 * 2**failures, 5.0))
        self._waiting: list[tuple[JobResult, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._aborted: set[str] = set()

    async def record(self, result: JobResult) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((result, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        failures = 0
        while self._waiting:
            group, self._waiting = self._waiting, []
            while True:
                try:
                    await self.store.record([result for result, _ in group])
                    break
                except JobStoreError as exc:
                    failures += 1
                    log.warning("jobs.write_failed", results=len(group), error=str(exc))
                    await asyncio.sleep(self._pause(failures))
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    def aborted(self, job: str) -> bool:
        return job in self._aborted

    async def read_aborts(self) -> None:
        """The aborted jobs, as the store has them now."""
        self._aborted = await self.store.aborted()

    async def watch(self) -> None:
        """Follow aborts, and forget jobs past their retention, until cancelled."""
        since_cleanup = _IDLE_CHECK_S  # the first look at start
        while True:
            try:
                await self.read_aborts()
                if since_cleanup >= _IDLE_CHECK_S:
                    since_cleanup = 0.0
                    forgotten = await self.store.forget_idle(self._retention_s)
                    if forgotten:
                        log.info("jobs.forgotten", jobs=forgotten, note="past JOB_RETENTION_DAYS")
            except JobStoreError as exc:
                log.warning("jobs.read_failed", error=str(exc))
            await asyncio.sleep(ABORTS_READ_S)
            since_cleanup += ABORTS_READ_S

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.store.close()
