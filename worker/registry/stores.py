"""Where the registry's entries live: a local SQLite file, or Redis.

Each entry is one JSON document under the portal's key, its secrets already
sealed (see `sealing`). Every change also counts up a version, so a worker
learns that something changed by reading one number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from worker.registry.errors import RegistryError

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

T = TypeVar("T")

__all__ = ["RedisStore", "SqliteStore", "Store", "open_owner_only", "redis_errors", "text"]


class Store(Protocol):
    async def read_all(self) -> dict[str, str]: ...
    async def read(self, key: str) -> str | None: ...
    async def write(self, entries: Mapping[str, str]) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def version(self) -> int: ...
    async def close(self) -> None: ...


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS portals (key TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER)",
    "INSERT OR IGNORE INTO changes (id, version) VALUES (1, 0)",
)


class SqliteStore:
    """A file beside the worker (one worker, no server). It is created, readable by
    its owner only, on the first write; until then the registry is empty."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _existing(self) -> sqlite3.Connection | None:
        return self._connect() if self.path.exists() else None

    def _connect(self) -> sqlite3.Connection:
        connection = open_owner_only(self.path)
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.commit()
        return connection

    def _read_all(self) -> dict[str, str]:
        connection = self._existing()
        if connection is None:
            return {}
        with closing(connection):
            return dict(connection.execute("SELECT key, doc FROM portals ORDER BY key"))

    def _read(self, key: str) -> str | None:
        connection = self._existing()
        if connection is None:
            return None
        with closing(connection):
            row = connection.execute("SELECT doc FROM portals WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _write(self, entries: Mapping[str, str]) -> None:
        connection = self._connect()
        with closing(connection), connection:
            connection.executemany(
                "INSERT INTO portals (key, doc) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET doc = excluded.doc",
                list(entries.items()),
            )
            connection.execute("UPDATE changes SET version = version + 1 WHERE id = 1")

    def _delete(self, key: str) -> bool:
        connection = self._existing()
        if connection is None:
            return False
        with closing(connection), connection:
            gone = connection.execute("DELETE FROM portals WHERE key = ?", (key,)).rowcount
            if gone:
                connection.execute("UPDATE changes SET version = version + 1 WHERE id = 1")
        return bool(gone)

    def _version(self) -> int:
        connection = self._existing()
        if connection is None:
            return 0
        with closing(connection):
            row = connection.execute("SELECT version FROM changes WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        # SQLite blocks: each call runs in a thread, off the worker's event loop.
        try:
            return await asyncio.to_thread(call, *args)
        except (sqlite3.Error, OSError) as exc:
            raise RegistryError(f"the registry file {self.path}: {exc}") from None

    async def read_all(self) -> dict[str, str]:
        return await self._run(self._read_all)

    async def read(self, key: str) -> str | None:
        return await self._run(self._read, key)

    async def write(self, entries: Mapping[str, str]) -> None:
        await self._run(self._write, entries)

    async def delete(self, key: str) -> bool:
        return await self._run(self._delete, key)

    async def version(self) -> int:
        return await self._run(self._version)

    async def close(self) -> None:
        return None


class RedisStore:
    """A hash in the Redis of LIMITER_URL, shared by every replica. Redis must
    persist it: run it with AOF (`appendonly yes`)."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._entries = f"{prefix}portals"
        self._version = f"{prefix}version"

    async def read_all(self) -> dict[str, str]:
        async with _redis_errors():
            raw = await self._redis.hgetall(self._entries)
        return {text(key): text(doc) for key, doc in sorted(raw.items())}

    async def read(self, key: str) -> str | None:
        async with _redis_errors():
            doc = await self._redis.hget(self._entries, key)
        return None if doc is None else text(doc)

    async def write(self, entries: Mapping[str, str]) -> None:
        async with _redis_errors(), self._redis.pipeline(transaction=True) as pipe:
            for key, doc in entries.items():
                pipe.hset(self._entries, key, doc)
            pipe.incr(self._version)
            await pipe.execute()

    async def delete(self, key: str) -> bool:
        async with _redis_errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._entries, key)
            pipe.incr(self._version)
            gone, _ = await pipe.execute()
        return bool(gone)

    async def version(self) -> int:
        async with _redis_errors():
            value = await self._redis.get(self._version)
        return int(value) if value is not None else 0

    async def close(self) -> None:
        await self._redis.aclose()


def open_owner_only(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """The SQLite file at ``path``, created readable by its owner only, in WAL mode:
    readers (the workers) and a writer (the command line) side by side."""
    if not path.exists():
        # Created with owner-only permissions before SQLite opens it.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, timeout=10.0, check_same_thread=check_same_thread)
    connection.execute("PRAGMA journal_mode=WAL")
    return connection


@asynccontextmanager
async def redis_errors(error: type[Exception], what: str) -> AsyncIterator[None]:
    """Redis failing (or unreachable) as ``error``, its message naming ``what`` failed."""
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as exc:
        raise error(f"{what} in Redis: {type(exc).__name__}: {exc}") from None


def _redis_errors() -> contextlib.AbstractAsyncContextManager[None]:
    return redis_errors(RegistryError, "the registry")


def text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value
