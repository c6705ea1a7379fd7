"""The job store: counts kept once per message id, aborts, results, retention.

Both stores are exercised the same way: the SQLite file beside one worker and
the Redis that replicas share (the machine's Redis, at REDIS_URL).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from worker.bulk import JobLedger, JobStore
from worker.bulk.store import RATE_WINDOW_S, RedisJobs, SqliteJobs
from worker.flow.ledger import JobResult


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[JobStore]:
    if request.param == "sqlite":
        sqlite = SqliteJobs(tmp_path / "portals.sqlite3", clock=clock)
        yield sqlite
        await sqlite.close()
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = f"test-jobs:{uuid.uuid4().hex[:8]}:"
    try:
        yield RedisJobs(redis, prefix=prefix, clock=clock)
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def ok(message_id: str, at: float, job: str = "prices") -> JobResult:
    return JobResult(job, message_id, "succeeded", at, portal="acme", entity_type_id=2, item_id=7)


def failed(message_id: str, at: float, error_class: str = "not_found") -> JobResult:
    return JobResult(
        "prices",
        message_id,
        "failed",
        at,
        entity_type_id=2,
        item_id=404,
        error_class=error_class,
        code="NOT_FOUND",
        description="no such item",
        command={"entityTypeId": 2, "id": 404, "fields": {"opportunity": 10}},
        properties={"headers": {"x-b24-job": "prices"}},
    )


async def test_each_message_counts_once_as_its_latest_end(store: JobStore, clock: Clock) -> None:
    await store.publishing("prices", 5)
    now = clock.now
    await store.record([ok("m1", now), ok("m2", now), failed("m3", now)])
    # A kill re-delivers: the same messages end again, one of them differently.
    await store.record([ok("m1", now + 1), failed("m2", now + 1, "transient")])
    state = await store.state("prices")
    assert state is not None
    assert (state.queued, state.succeeded) == (5, 1)
    assert state.failed == {"not_found": 1, "transient": 1}
    # A failure replayed from the dead letters succeeds this time.
    await store.record([ok("m2", now + 2)])
    state = await store.state("prices")
    assert state is not None
    assert (state.succeeded, state.failed) == (2, {"not_found": 1})
    assert (state.ended, state.in_flight, state.done) == (3, 2, False)
    await store.record([ok("m4", now + 3), ok("m5", now + 3)])
    state = await store.state("prices")
    assert state is not None
    assert state.done
    assert state.in_flight == 0


async def test_results_keep_each_failure_with_its_command(store: JobStore, clock: Clock) -> None:
    await store.publishing("prices", 3)
    await store.record([ok("m1", clock.now), failed("m2", clock.now), ok("m3", clock.now)])
    everything = [result.message_id async for result in store.results("prices")]
    assert everything == ["m1", "m2", "m3"]
    failures = [result async for result in store.results("prices", "failed")]
    assert [f.message_id for f in failures] == ["m2"]
    assert failures[0].command == {"entityTypeId": 2, "id": 404, "fields": {"opportunity": 10}}
    assert failures[0].error_class == "not_found"
    assert failures[0].properties == {"headers": {"x-b24-job": "prices"}}
    assert [r.message_id async for r in store.results("prices", "succeeded")] == ["m1", "m3"]


async def test_the_estimate_is_what_is_left_over_the_recent_rate(
    store: JobStore, clock: Clock
) -> None:
    await store.publishing("prices", 1000)
    start = clock.now
    # 10 results a second for 30 s: 300 of 1,000.
    for second in range(30):
        await store.record([ok(f"m{second}-{n}", start + second + n / 10) for n in range(10)])
    clock.now = start + 30
    state = await store.state("prices")
    assert state is not None
    assert state.ended == 300
    assert state.rate == pytest.approx(10.0, rel=0.1)
    assert state.eta_s == pytest.approx(70.0, rel=0.1)  # 700 left at 10/s
    # Nothing for a whole window: no rate, no estimate.
    clock.now = start + 30 + RATE_WINDOW_S + 1
    state = await store.state("prices")
    assert state is not None
    assert state.eta_s is None


async def test_an_abort_is_seen_by_every_reader_and_unknown_jobs_are_refused(
    store: JobStore,
) -> None:
    assert await store.abort("nope") is False
    await store.publishing("prices", 2)
    assert await store.aborted() == set()
    assert await store.abort("prices") is True
    assert await store.aborted() == {"prices"}
    state = await store.state("prices")
    assert state is not None
    assert state.aborted_at is not None


async def test_jobs_idle_past_their_retention_are_forgotten(store: JobStore, clock: Clock) -> None:
    await store.publishing("old", 1)
    await store.record([ok("m1", clock.now, job="old")])
    clock.now += 3600
    await store.publishing("new", 1)
    clock.now += 1800
    assert await store.forget_idle(retention_s=3000) == 1
    assert [state.job for state in await store.jobs()] == ["new"]
    assert await store.state("old") is None


async def test_a_sqlite_store_that_was_never_written_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "portals.sqlite3"
    store = SqliteJobs(path)
    assert await store.aborted() == set()
    assert await store.jobs() == []
    assert await store.state("prices") is None
    assert not path.exists()


async def test_the_ledger_writes_results_that_come_together_in_one_go(tmp_path: Path) -> None:
    writes: list[int] = []

    class Counting(SqliteJobs):
        async def record(self, results: Sequence[JobResult]) -> None:
            writes.append(len(results))
            await super().record(results)

    store = Counting(tmp_path / "portals.sqlite3")
    ledger = JobLedger(store, retention_s=86_400)
    await asyncio.gather(*(ledger.record(ok(f"m{n}", 1.0)) for n in range(50)))
    state = await store.state("prices")
    assert state is not None
    assert state.succeeded == 50
    assert sum(writes) == 50
    assert len(writes) < 5
    await ledger.close()


async def test_a_burst_at_the_start_of_a_job_does_not_make_the_rest_look_faster(
    store: JobStore, clock: Clock
) -> None:
    await store.publishing("prices", 3000)
    start = clock.now
    # The portal's burst: 500 results in the first second, then its pace of 100/s.
    await store.record([ok(f"b{n}", start + n / 1000) for n in range(500)])
    for second in range(1, 16):
        await store.record([ok(f"m{second}-{n}", start + second + n / 100) for n in range(100)])
    clock.now = start + 16
    state = await store.state("prices")
    assert state is not None
    assert state.ended == 2000
    assert state.rate == pytest.approx(100.0, rel=0.15)
    assert state.eta_s == pytest.approx(10.0, rel=0.15)  # 1,000 left at 100/s
