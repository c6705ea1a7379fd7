"""Fixtures for the limiter: a fake clock, and every backend the algorithms run over.

Over Redis, each test gets scopes of its own, deleted afterwards, and the fake
clock waits for the backend's operations in flight (see ``tracking``). Tests
that need Redis itself take ``redis`` (a client) and ``scope``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

import pytest
from redis.asyncio import Redis

from tests.worker.limiter.tracking import Tracked
from worker.limiter import Codec, FakeClock, MemoryBackend, RedisBackend, StateBackend

S = TypeVar("S")

BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


class BackendFactory(Protocol):
    """Makes a fresh, empty backend for one kind of state."""

    def __call__(self, codec: Codec[S]) -> StateBackend[S]: ...


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def scope(redis: Redis) -> AsyncIterator[str]:
    """A scope no other test uses; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    await delete_scopes(redis, name)


async def delete_scopes(redis: Redis, prefix: str) -> None:
    """Delete the keys of every scope whose name starts with ``prefix``."""
    keys = [key async for key in redis.scan_iter(match=f"b24-worker:limiter:{prefix}*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture(params=BACKENDS)
async def make_backend(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[BackendFactory]:
    """Each test that takes this runs once per backend, as the algorithms must not depend on it."""
    if request.param == "memory":

        def in_memory(codec: Codec[S]) -> StateBackend[S]:
            return MemoryBackend()

        yield in_memory
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = f"test-{uuid.uuid4().hex}-"
    numbers = itertools.count()

    def in_redis(codec: Codec[S]) -> StateBackend[S]:
        # Deleted after the test; the TTL catches what a failed test's stray tasks write later.
        scope = f"{prefix}{next(numbers)}"
        backend = Tracked(RedisBackend(client, scope=scope, codec=codec, ttl_s=600.0))
        clock.wait_also_for(backend.busy)
        return backend

    try:
        yield in_redis
    finally:
        await delete_scopes(client, prefix)
        await client.aclose()
