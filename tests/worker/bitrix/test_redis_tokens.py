"""The refresh token kept in Redis: what one replica saves, another loads."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from worker.bitrix import FileTokenStore, StoredToken, TokenRenewalError
from worker.bitrix.redis_tokens import RedisTokenStore
from worker.credentials import token_store
from worker.settings import Settings

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_saved_token_is_loaded_by_another_store(redis: Redis) -> None:
    key = f"test:{uuid.uuid4().hex}"
    first, second = RedisTokenStore(redis, key=key), RedisTokenStore(redis, key=key)
    assert await first.load() is None
    token = StoredToken(refresh_token="rotated-refresh-1", origin="abc", saved_at=1.5)
    await first.save(token)
    assert await second.load() == token
    await redis.delete(key)


async def test_an_unreadable_value_says_how_to_start_again(redis: Redis) -> None:
    key = f"test:{uuid.uuid4().hex}"
    await redis.set(key, "not json")
    with pytest.raises(TokenRenewalError, match="delete the key"):
        await RedisTokenStore(redis, key=key).load()
    await redis.delete(key)


async def test_an_unreachable_redis_is_a_renewal_error_without_its_address() -> None:
    store = RedisTokenStore(Redis.from_url("redis://:S3cretPw@127.0.0.1:1/0"), key="k")
    with pytest.raises(TokenRenewalError) as caught:
        await store.load()
    assert "S3cretPw" not in str(caught.value)


def test_the_store_follows_limiter_url(redis_url: str) -> None:
    oauth: dict[str, Any] = {
        "B24_PORTAL_URL": "https://portal.example.com",
        "B24_CLIENT_ID": "app.1",
        "B24_CLIENT_SECRET": "secret-value",
        "B24_REFRESH_TOKEN": "refresh-value",
    }
    assert isinstance(token_store(Settings(**oauth)), FileTokenStore)
    shared = token_store(Settings(**oauth, LIMITER_URL=redis_url))
    assert isinstance(shared, RedisTokenStore)
    assert "portal.example.com" in repr(shared)
