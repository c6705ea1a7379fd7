"""Where bulk jobs are kept: beside the registry, in its SQLite file or in Redis.

A job is a name, the number of commands published under it (`queued`, counted
by the producer before it publishes them) and one result per message id: a
delivery the broker gives again after a kill ends the same command again, and
a failure sent again by `dlq replay` (it keeps its message id) ends it anew;
the latest end is the command's result, and it is counted once. From those
come the counts by outcome, the rate of the last seconds and so the estimate
of the end.

Jobs are forgotten `JOB_RETENTION_DAYS` after their last activity.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from worker.flow.ledger import JobResult
from worker.registry.stores import open_owner_only, redis_errors, text

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from worker.settings import Settings

T = TypeVar("T")

__all__ = [
    "RATE_WINDOW_S",
    "JobState",
    "JobStore",
    "JobStoreError",
    "RedisJobs",
    "SqliteJobs",
    "open_jobs",
    "result_from_doc",
    "result_to_doc",
]

# The rate of a job, for its estimate, is that of its last RATE_WINDOW_S seconds; of a
# job younger than twice that, of the latest half of its time: the portal's burst at the
# start of a job is spent once, and would otherwise make the rest look faster.
RATE_WINDOW_S = 15


def rate_window_s(first_at: float | None, now: float) -> float:
    """The seconds before ``now`` whose results give a job's rate."""
    if first_at is None:
        return float(RATE_WINDOW_S)
    return min(float(RATE_WINDOW_S), max((now - first_at) / 2, 1.0))


Which = Literal["all", "succeeded", "failed"]


class JobStoreError(Exception):
    """The job store cannot be read or written; the message says which and why."""


@dataclass
class JobState:
    """A job as `jobs show` tells it."""

    job: str
    created_at: float
    queued: int = 0
    succeeded: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by error class
    aborted_at: float | None = None
    first_at: float | None = None  # its first result
    last_at: float | None = None  # its latest result
    recent: int = 0  # results in the `window_s` seconds before `read_at`
    window_s: float = float(RATE_WINDOW_S)
    read_at: float = 0.0

    @property
    def ended(self) -> int:
        return self.succeeded + sum(self.failed.values())

    @property
    def expected(self) -> int:
        """The commands of the job: those published, or more if results came without."""
        return max(self.queued, self.ended)

    @property
    def in_flight(self) -> int:
        """Published and not ended yet: on the broker, in a worker, or being sent."""
        return self.expected - self.ended

    @property
    def done(self) -> bool:
        return self.expected > 0 and self.in_flight == 0

    @property
    def rate(self) -> float | None:
        """Results per second lately (see `rate_window_s`); None before any."""
        if self.first_at is None:
            return None
        return self.recent / self.window_s

    @property
    def eta_s(self) -> float | None:
        """Seconds until the last result, at the recent rate (None when unknown)."""
        if self.done:
            return 0.0
        rate = self.rate
        if not rate:
            return None
        return self.in_flight / rate


class JobStore(Protocol):
    async def publishing(self, job: str, count: int) -> None:
        """`count` more commands of `job` are on the broker (the job starts with the first)."""

    async def record(self, results: Sequence[JobResult]) -> None: ...
    async def abort(self, job: str) -> bool: ...
    async def aborted(self) -> set[str]: ...
    async def state(self, job: str) -> JobState | None: ...
    async def jobs(self) -> list[JobState]: ...
    def results(self, job: str, which: Which = "all") -> AsyncIterator[JobResult]: ...
    async def forget_idle(self, retention_s: float) -> int: ...
    async def forget(self, job: str) -> bool: ...
    async def close(self) -> None: ...


def result_to_doc(result: JobResult) -> str:
    doc: dict[str, Any] = {"messageId": result.message_id, "status": result.status}
    doc["at"] = round(result.at, 3)
    for name, value in (
        ("portal", result.portal),
        ("entityTypeId", result.entity_type_id),
        ("id", result.item_id),
        ("class", result.error_class),
        ("code", result.code),
        ("description", result.description),
        ("command", result.command),
        ("properties", result.properties),
    ):
        if value is not None:
            doc[name] = value
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def result_from_doc(job: str, text: str) -> JobResult:
    doc = json.loads(text)
    return JobResult(
        job,
        doc["messageId"],
        doc["status"],
        float(doc["at"]),
        portal=doc.get("portal"),
        entity_type_id=doc.get("entityTypeId"),
        item_id=doc.get("id"),
        error_class=doc.get("class"),
        code=doc.get("code"),
        description=doc.get("description"),
        command=doc.get("command"),
        properties=doc.get("properties"),
    )


# -- SQLite: the registry's file ------------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (job TEXT PRIMARY KEY, created_at REAL NOT NULL, "
    "queued INTEGER NOT NULL DEFAULT 0, aborted_at REAL, last_active REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS job_results (job TEXT NOT NULL, message_id TEXT NOT NULL, "
    "status TEXT NOT NULL, error_class TEXT, at REAL NOT NULL, doc TEXT NOT NULL, "
    "PRIMARY KEY (job, message_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS job_results_at ON job_results (job, at)",
)


class SqliteJobs:
    """Jobs in the registry's SQLite file (one worker, no server)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._connection: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _existing(self) -> sqlite3.Connection | None:
        """The store, or None while its file does not exist (reads create nothing)."""
        return self._connect() if self._connection or self.path.exists() else None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Used by one thread at a time (see _run), not always the same one.
            connection = open_owner_only(self.path, check_same_thread=False)
            connection.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.commit()
            self._connection = connection
        return self._connection

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        # One connection, used by one thread at a time, off the event loop.
        async with self._lock:
            try:
                return await asyncio.to_thread(call, *args)
            except (sqlite3.Error, OSError) as exc:
                raise JobStoreError(f"the job store {self.path}: {exc}") from None

    def _publishing(self, job: str, count: int) -> None:
        connection = self._connect()
        now = self._clock()
        with connection:
            connection.execute(
                "INSERT INTO jobs (job, created_at, queued, last_active) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET queued = queued + excluded.queued, "
                "last_active = excluded.last_active",
                (job, now, count, now),
            )

    async def publishing(self, job: str, count: int) -> None:
        await self._run(self._publishing, job, count)

    def _record(self, results: Sequence[JobResult]) -> None:
        connection = self._connect()
        latest: dict[str, float] = {}
        for result in results:
            latest[result.job] = max(result.at, latest.get(result.job, result.at))
        with connection:
            connection.executemany(
                "INSERT INTO jobs (job, created_at, last_active) VALUES (?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET last_active = max(last_active, "
                "excluded.last_active)",
                [(job, at, at) for job, at in latest.items()],
            )
            connection.executemany(
                "INSERT INTO job_results (job, message_id, status, error_class, at, doc) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job, message_id) DO UPDATE SET "
                "status = excluded.status, error_class = excluded.error_class, "
                "at = excluded.at, doc = excluded.doc",
                [
                    (r.job, r.message_id, r.status, r.error_class, r.at, result_to_doc(r))
                    for r in results
                ],
            )

    async def record(self, results: Sequence[JobResult]) -> None:
        if results:
            await self._run(self._record, results)

    def _abort(self, job: str) -> bool:
        connection = self._existing()
        if connection is None:
            return False
        with connection:
            changed = connection.execute(
                "UPDATE jobs SET aborted_at = coalesce(aborted_at, ?) WHERE job = ?",
                (self._clock(), job),
            ).rowcount
        return bool(changed)

    async def abort(self, job: str) -> bool:
        return await self._run(self._abort, job)

    def _aborted(self) -> set[str]:
        connection = self._existing()
        if connection is None:
            return set()
        rows = connection.execute("SELECT job FROM jobs WHERE aborted_at IS NOT NULL")
        return {str(row[0]) for row in rows}

    async def aborted(self) -> set[str]:
        return await self._run(self._aborted)

    def _state(self, job: str) -> JobState | None:
        connection = self._existing()
        if connection is None:
            return None
        row = connection.execute(
            "SELECT created_at, queued, aborted_at FROM jobs WHERE job = ?", (job,)
        ).fetchone()
        if row is None:
            return None
        now = self._clock()
        state = JobState(job, row[0], queued=row[1], aborted_at=row[2], read_at=now)
        for status, error_class, count, first, last in connection.execute(
            "SELECT status, error_class, count(*), min(at), max(at) FROM job_results "
            "WHERE job = ? GROUP BY status, error_class",
            (job,),
        ):
            if status == "succeeded":
                state.succeeded += count
            else:
                state.failed[error_class or "unknown"] = count
            state.first_at = first if state.first_at is None else min(state.first_at, first)
            state.last_at = last if state.last_at is None else max(state.last_at, last)
        state.window_s = rate_window_s(state.first_at, now)
        (state.recent,) = connection.execute(
            "SELECT count(*) FROM job_results WHERE job = ? AND at > ?",
            (job, now - state.window_s),
        ).fetchone()
        return state

    async def state(self, job: str) -> JobState | None:
        return await self._run(self._state, job)

    def _jobs(self) -> list[JobState]:
        connection = self._existing()
        if connection is None:
            return []
        names = [row[0] for row in connection.execute("SELECT job FROM jobs ORDER BY job")]
        return [state for name in names if (state := self._state(name)) is not None]

    async def jobs(self) -> list[JobState]:
        return await self._run(self._jobs)

    def _results_page(self, job: str, which: Which, after: str, limit: int) -> list[str]:
        query = "SELECT message_id, doc FROM job_results WHERE job = ? AND message_id > ?"
        args: tuple[object, ...] = (job, after)
        if which != "all":
            query += " AND status = ?"
            args += (which,)
        query += " ORDER BY message_id LIMIT ?"
        connection = self._existing()
        if connection is None:
            return []
        return [str(row[1]) for row in connection.execute(query, (*args, limit))]

    async def results(self, job: str, which: Which = "all") -> AsyncIterator[JobResult]:
        after = ""
        while True:
            page = await self._run(self._results_page, job, which, after, 1000)
            for doc in page:
                result = result_from_doc(job, doc)
                yield result
                after = result.message_id
            if len(page) < 1000:
                return

    def _forget_idle(self, retention_s: float) -> int:
        connection = self._existing()
        if connection is None:
            return 0
        cutoff = self._clock() - retention_s
        with connection:
            old = [
                row[0]
                for row in connection.execute(
                    "SELECT job FROM jobs WHERE last_active < ?", (cutoff,)
                )
            ]
            for job in old:
                self._delete(connection, job)
        return len(old)

    @staticmethod
    def _delete(connection: sqlite3.Connection, job: str) -> int:
        connection.execute("DELETE FROM job_results WHERE job = ?", (job,))
        return connection.execute("DELETE FROM jobs WHERE job = ?", (job,)).rowcount

    async def forget_idle(self, retention_s: float) -> int:
        return await self._run(self._forget_idle, retention_s)

    def _forget(self, job: str) -> bool:
        connection = self._existing()
        if connection is None:
            return False
        with connection:
            return bool(self._delete(connection, job))

    async def forget(self, job: str) -> bool:
        return await self._run(self._forget, job)

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                with closing(self._connection):
                    pass
                self._connection = None


# -- Redis: shared by the replicas ------------------------------------------------------------

# One result, the latest for its message id: the counters move from its earlier end.
_RECORD = """
local earlier = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if earlier then
  local was = cjson.decode(earlier)
  local counter = 'succeeded'
  if was['status'] ~= 'succeeded' then counter = 'failed:' .. (was['class'] or 'unknown') end
  redis.call('HINCRBY', KEYS[2], counter, -1)
end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
local first = redis.call('HGET', KEYS[2], 'first_at')
if not first or tonumber(first) > tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[2], 'first_at', ARGV[5])
end
local last = redis.call('HGET', KEYS[2], 'last_at')
if not last or tonumber(last) < tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[2], 'last_at', ARGV[5])
end
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[5])
redis.call('ZADD', KEYS[4], 'GT', ARGV[5], ARGV[6])
return 1
"""


class RedisJobs:
    """Jobs in the Redis of LIMITER_URL, shared by every replica (run it with AOF).

    Under the prefix: ``index`` (a sorted set of job ids by last activity),
    ``aborted`` (a set), and per job ``job:<id>`` (a hash: created_at, queued,
    aborted_at, first_at, last_at and the counters ``succeeded`` and
    ``failed:<class>``), ``results:<id>`` (a hash: message id -> result) and
    ``seconds:<id>`` (a hash: epoch second -> results in it).
    """

    def __init__(
        self, redis: Redis, *, prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._index = f"{prefix}index"
        self._aborted = f"{prefix}aborted"
        self._record_script = redis.register_script(_RECORD)

    def _keys(self, job: str) -> tuple[str, str, str]:
        p = self._prefix
        return f"{p}job:{job}", f"{p}results:{job}", f"{p}seconds:{job}"

    async def publishing(self, job: str, count: int) -> None:
        meta, _, _ = self._keys(job)
        now = self._clock()
        async with _redis_errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(meta, "created_at", now)
            pipe.hincrby(meta, "queued", count)
            pipe.zadd(self._index, {job: now})
            await pipe.execute()

    async def record(self, results: Sequence[JobResult]) -> None:
        if not results:
            return
        async with _redis_errors(), self._redis.pipeline(transaction=False) as pipe:
            for r in results:
                meta, kept, seconds = self._keys(r.job)
                counter = (
                    "succeeded"
                    if r.status == "succeeded"
                    else f"failed:{r.error_class or 'unknown'}"
                )
                await self._record_script(
                    keys=[kept, meta, seconds, self._index],
                    args=[r.message_id, result_to_doc(r), counter, int(r.at), r.at, r.job],
                    client=pipe,
                )
            await pipe.execute()

    async def abort(self, job: str) -> bool:
        meta, _, _ = self._keys(job)
        async with _redis_errors():
            if not await self._redis.exists(meta):
                return False
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(meta, "aborted_at", self._clock())
                pipe.sadd(self._aborted, job)
                await pipe.execute()
        return True

    async def aborted(self) -> set[str]:
        async with _redis_errors():
            members = await self._redis.smembers(self._aborted)
        return {text(member) for member in members}

    async def state(self, job: str) -> JobState | None:
        meta, _, seconds = self._keys(job)
        now = self._clock()
        async with _redis_errors():
            fields = {text(k): text(v) for k, v in (await self._redis.hgetall(meta)).items()}
            if not fields:
                return None
            window_s = rate_window_s(_float(fields.get("first_at")), now)
            # Whole seconds: the window rounded up to the seconds the counts are kept by.
            window = [str(second) for second in range(int(now - window_s) + 1, int(now) + 1)]
            recent = await self._redis.hmget(seconds, window)
        state = JobState(
            job,
            float(fields.get("created_at", now)),
            queued=int(fields.get("queued", 0)),
            succeeded=int(fields.get("succeeded", 0)),
            aborted_at=_float(fields.get("aborted_at")),
            first_at=_float(fields.get("first_at")),
            last_at=_float(fields.get("last_at")),
            recent=sum(int(count) for count in recent if count is not None),
            window_s=float(len(window)),
            read_at=now,
        )
        state.failed = dict(
            Counter(
                {
                    name.removeprefix("failed:"): int(value)
                    for name, value in fields.items()
                    if name.startswith("failed:") and int(value) > 0
                }
            )
        )
        return state

    async def jobs(self) -> list[JobState]:
        async with _redis_errors():
            found = await self._redis.zrange(self._index, 0, -1)
            names = sorted(text(name) for name in found if isinstance(name, bytes | str))
        return [state for name in names if (state := await self.state(name)) is not None]

    async def results(self, job: str, which: Which = "all") -> AsyncIterator[JobResult]:
        _, kept, _ = self._keys(job)
        cursor = 0
        found: list[JobResult] = []
        while True:
            async with _redis_errors():
                cursor, page = await self._redis.hscan(kept, cursor, count=1000)
            docs = page.values() if isinstance(page, dict) else page
            for doc in docs:
                result = result_from_doc(job, text(doc))
                if which in ("all", result.status):
                    found.append(result)
            if cursor == 0:
                break
        for result in sorted(found, key=lambda r: r.message_id):
            yield result

    async def forget_idle(self, retention_s: float) -> int:
        cutoff = self._clock() - retention_s
        async with _redis_errors():
            found = await self._redis.zrangebyscore(self._index, 0, cutoff)
            old = [text(name) for name in found if isinstance(name, bytes | str)]
        for job in old:
            await self.forget(job)
        return len(old)

    async def forget(self, job: str) -> bool:
        async with _redis_errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self._keys(job))
            pipe.zrem(self._index, job)
            pipe.srem(self._aborted, job)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def close(self) -> None:
        await self._redis.aclose()


def _redis_errors() -> AbstractAsyncContextManager[None]:
    return redis_errors(JobStoreError, "the job store")


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def open_jobs(settings: Settings) -> JobStore:
    """The job store these settings name: LIMITER_URL's Redis, or REGISTRY_PATH's file."""
    limiter_url = settings.LIMITER_URL.get_secret_value()
    if limiter_url:
        from redis.asyncio import Redis

        prefix = f"b24-worker:jobs:{settings.UPDATE_QUEUE}:"
        return RedisJobs(Redis.from_url(limiter_url), prefix=prefix)
    return SqliteJobs(settings.REGISTRY_PATH)
