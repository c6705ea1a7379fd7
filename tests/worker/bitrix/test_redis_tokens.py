"""The refresh token kept in Redis: what one replica saves, another loads."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from worker.bitrix import FileTokenStore, StoredToken, TokenRenewalError
from worker.bitrix.redis_tokens import RedisTokenStore
from worker.credentials import token_store
from worker.settings import PortalConfig, Settings

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
    token = StoredToken("rotated-refresh-1", "abc", saved_at=1.5, version=1, access_token="a1")
    assert await first.save(token)
    assert await second.load() == token
    await redis.delete(key)


async def test_a_save_naming_an_older_version_is_refused_and_changes_nothing(redis: Redis) -> None:
    key = f"test:{uuid.uuid4().hex}"
    store = RedisTokenStore(redis, key=key)
    head = StoredToken("rotated-refresh-2", "abc", saved_at=2.0, version=2)
    assert not await store.save(head)  # nothing stored: only version 1 may be saved
    assert await store.save(dataclasses.replace(head, version=1))
    assert await store.save(head)
    stalled = StoredToken("stalled-holder", "abc", saved_at=3.0, version=2)
    assert not await store.save(stalled)
    assert await store.load() == head
    await redis.delete(key)


async def test_the_refresh_lock_has_one_holder_and_expires_if_its_holder_stalls(
    redis: Redis,
) -> None:
    key = f"test:{uuid.uuid4().hex}"
    first = RedisTokenStore(redis, key=key, lock_ttl_s=0.5)
    second = RedisTokenStore(redis, key=key, lock_ttl_s=0.5)
    order: list[str] = []

    async def hold(store: RedisTokenStore, name: str, seconds: float) -> None:
        async with store.hold():
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    await asyncio.gather(hold(first, "a", 0.1), hold(second, "b", 0.1))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    order.clear()
    # A holder stalled past the lock's time: the next one gets in meanwhile.
    stalled = asyncio.ensure_future(hold(first, "a", 1.0))
    await asyncio.sleep(0.05)
    await hold(second, "b", 0.7)
    await stalled
    assert order == ["a in", "b in", "a out", "b out"]


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


def test_each_portal_keeps_its_token_in_a_file_of_its_own(tmp_path: Path) -> None:
    """Without Redis: the portal of the B24_* variables in B24_TOKEN_FILE, a configured
    one and one registered while the worker runs (not in the settings) beside it."""
    oauth: dict[str, Any] = {
        "portal_url": "https://east.example.com",
        "client_id": "app.1",
        "client_secret": "secret-value",
        "refresh_token": "refresh-value",
    }
    settings = Settings(
        B24_PORTAL_URL="https://main.example.com",
        B24_CLIENT_ID="app.1",
        B24_CLIENT_SECRET="secret-value",
        B24_REFRESH_TOKEN="refresh-value",
        B24_TOKEN_FILE=str(tmp_path / "token.json"),
        B24_PORTALS={"east": oauth},
    )
    registered = settings.portal("west", PortalConfig(**{**oauth, "portal_url": "https://w.ex"}))
    paths = {
        repr(token_store(settings, portal)) for portal in [*settings.portals().values(), registered]
    }
    assert paths == {
        f"FileTokenStore({str(tmp_path / name)!r})"
        for name in ("token.json", "token.east.json", "token.west.json")
    }


async def test_a_forgotten_token_is_gone_from_either_store(redis_url: str, tmp_path: Path) -> None:
    token = StoredToken(refresh_token="r", origin="o", saved_at=1.0, version=1)
    file_store = FileTokenStore(tmp_path / "token.json")
    redis = Redis.from_url(redis_url)
    redis_store = RedisTokenStore(redis, key=f"test-forget:{uuid.uuid4().hex}")
    try:
        for store in (file_store, redis_store):
            assert await store.save(token) is True
            async with store.hold():
                pass
            await store.forget()
            assert await store.load() is None
            await store.forget()  # nothing left: no error either
        assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []  # lock too
    finally:
        await redis.aclose()
