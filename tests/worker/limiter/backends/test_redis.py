"""The Redis backend: namespaced keys that expire, one value across clients, no change twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.worker.limiter.backends.proxy import Proxy
from tests.worker.limiter.backends.test_backends import COUNTER, add
from worker.limiter import RedisBackend

pytestmark = pytest.mark.redis


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(redis_url)
    await proxy.open()
    yield proxy
    await proxy.close()


async def test_a_value_lives_under_its_scope_and_kind_and_expires(redis: Redis, scope: str) -> None:
    backend = RedisBackend(redis, scope=scope, codec=COUNTER, ttl_s=60.0)
    await backend.modify("crm.item.update", add(7))
    key = f"b24-worker:limiter:{scope}:counter:crm.item.update"
    assert backend.key("crm.item.update") == key
    assert await redis.hget(key, "value") == b"7"
    assert 0 < await redis.pttl(key) <= 60_000
    await redis.pexpire(key, 5_000)
    await backend.modify("crm.item.update", add(1))
    assert await redis.pttl(key) > 5_000  # every write gives the value its TTL again


async def test_clients_of_one_scope_share_values_and_other_scopes_do_not(
    redis_url: str, scope: str
) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(3)]
    try:
        mine = [RedisBackend(c, scope=scope, codec=COUNTER) for c in clients]
        other = RedisBackend(clients[0], scope=f"{scope}-other", codec=COUNTER)
        await asyncio.gather(*(b.modify("n", add(1)) for b in mine for _ in range(30)))
        assert await mine[2].modify("n", add(0)) == 90
        assert await other.modify("n", add(0)) == 0
    finally:
        for client in clients:
            await client.aclose()


async def test_an_unreadable_value_starts_the_key_again(redis: Redis, scope: str) -> None:
    backend = RedisBackend(redis, scope=scope, codec=COUNTER)
    await redis.hset(backend.key("n"), mapping={"version": "v1", "value": "not a number"})
    assert await backend.modify("n", add(2)) == 2


async def test_a_write_whose_answer_was_lost_is_not_applied_twice(proxy: Proxy, scope: str) -> None:
    client = Redis.from_url(proxy.url)
    try:
        backend = RedisBackend(client, scope=scope, codec=COUNTER)
        await backend.modify("warm-up", add(1))  # the script is known to Redis from here on
        proxy.lose_answer_to = b"EVALSHA"
        assert await backend.modify("n", add(1)) == 1
        assert proxy.answers_lost == 1
        assert await backend.modify("n", add(0)) == 1
    finally:
        await client.aclose()
