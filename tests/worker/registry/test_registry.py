"""The registry of portals: entries kept, shown without secrets, secrets sealed at rest.

Both stores are exercised the same way: the SQLite file of one worker and the
Redis hash replicas share (the machine's Redis, at REDIS_URL).
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from worker.registry import (
    RedisStore,
    Registry,
    RegistryError,
    RegistryKeyError,
    Sealer,
    SqliteStore,
    Store,
    new_key,
    with_registry,
)
from worker.settings import PortalConfig, Settings

WEBHOOK_CODE = "hookcode5x1y2z3"
CLIENT_SECRET = "clientsecret-7Qp2"
REFRESH_TOKEN = "refreshtoken-9Zk4"
SECRETS = (WEBHOOK_CODE, CLIENT_SECRET, REFRESH_TOKEN)


def webhook(host: str = "acme.bitrix24.ru") -> PortalConfig:
    return PortalConfig(
        webhook_url=SecretStr(f"https://{host}/rest/1/{WEBHOOK_CODE}/"), rate_burst=10
    )


def oauth() -> PortalConfig:
    return PortalConfig(
        portal_url="https://beta.bitrix24.de",
        client_id="app.5f1e",
        client_secret=SecretStr(CLIENT_SECRET),
        refresh_token=SecretStr(REFRESH_TOKEN),
    )


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "portals.sqlite3")
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = f"test-registry:{uuid.uuid4().hex[:8]}:"
    try:
        yield RedisStore(redis, prefix=prefix)
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def raw_bytes(store: Store) -> bytes:
    """Everything the store holds, as it lies at rest."""
    if isinstance(store, SqliteStore):
        return b"".join(path.read_bytes() for path in store.path.parent.glob("portals.sqlite3*"))
    return "".join(sorted((await store.read_all()).values())).encode()


async def test_a_registered_portal_comes_back_with_its_credentials(store: Store) -> None:
    registry = Registry(store, Sealer(new_key()))
    await registry.add("acme", webhook())
    await registry.add("beta", oauth())
    found = await registry.portals()
    assert found == {"acme": webhook(), "beta": oauth()}


async def test_what_is_shown_holds_no_secret(store: Store) -> None:
    registry = Registry(store, Sealer(new_key()))
    await registry.add("acme", webhook())
    await registry.add("beta", oauth())
    shown = [entry.as_dict() for entry in await registry.entries()]
    assert [entry["key"] for entry in shown] == ["acme", "beta"]
    assert shown[0]["webhook_url"] == "https://acme.bitrix24.ru/rest/1/***/"
    assert shown[0]["limits"] == {"rate_burst": 10}
    assert shown[1]["host"] == "beta.bitrix24.de"
    assert shown[1]["client_id"] == "app.5f1e"
    assert not any(secret in repr(shown) for secret in SECRETS)


async def test_the_raw_store_holds_no_secret(store: Store) -> None:
    registry = Registry(store, Sealer(new_key()))
    await registry.add("acme", webhook())
    await registry.add("beta", oauth())
    raw = await raw_bytes(store)
    assert b"acme.bitrix24.ru" in raw  # the store was read: the host is kept in the clear
    for secret in SECRETS:
        assert secret.encode() not in raw


async def test_listing_needs_no_key_and_reading_credentials_needs_the_right_one(
    store: Store,
) -> None:
    await Registry(store, Sealer(new_key())).add("acme", webhook())
    assert [entry.key for entry in await Registry(store, None).entries()] == ["acme"]
    with pytest.raises(RegistryKeyError, match="REGISTRY_KEY is not set"):
        await Registry(store, None).portals()
    with pytest.raises(RegistryKeyError, match="opens none"):
        await Registry(store, Sealer(new_key())).portals()


async def test_a_key_is_rotated_by_rekey(store: Store) -> None:
    old, new = new_key(), new_key()
    await Registry(store, Sealer(old)).add("acme", webhook())
    rotating = Registry(store, Sealer(f"{new},{old}"))
    assert await rotating.portals() == {"acme": webhook()}  # both keys open it meanwhile
    assert await rotating.rekey() == 1
    assert await Registry(store, Sealer(new)).portals() == {"acme": webhook()}
    with pytest.raises(RegistryKeyError):
        await Registry(store, Sealer(old)).portals()


async def test_adding_a_key_twice_needs_replace_and_remove_forgets(store: Store) -> None:
    registry = Registry(store, Sealer(new_key()))
    await registry.add("acme", webhook())
    with pytest.raises(RegistryError, match="already registered"):
        await registry.add("acme", webhook("other.bitrix24.ru"))
    await registry.add("acme", webhook("other.bitrix24.ru"), replace=True)
    entry = await registry.entry("acme")
    assert entry is not None
    assert entry.host == "other.bitrix24.ru"
    before = await registry.version()
    assert await registry.remove("acme") is True
    assert await registry.version() > before
    assert await registry.remove("acme") is False
    assert await registry.entries() == []


@pytest.mark.parametrize(
    ("key", "config", "problem"),
    [
        ("Bad Key", webhook(), "portal key 'Bad Key'"),
        ("plain", PortalConfig(webhook_url=SecretStr("http://a.example.com/rest/1/x/")), "http"),
        ("half", PortalConfig(portal_url="https://b.example.com", client_id="x"), "all of"),
        ("wrong", PortalConfig(webhook_url=SecretStr("https://a.example.com/x")), "webhook"),
    ],
)
async def test_a_portal_that_cannot_work_is_refused(
    tmp_path: Path, key: str, config: PortalConfig, problem: str
) -> None:
    store = SqliteStore(tmp_path / "portals.sqlite3")
    with pytest.raises(RegistryError, match=problem):
        await Registry(store, Sealer(new_key())).add(key, config)
    assert await store.read_all() == {}


async def test_the_file_is_made_on_the_first_write_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "portals.sqlite3"
    registry = Registry(SqliteStore(path), None)
    assert await registry.entries() == []
    assert await registry.version() == 0
    assert not path.exists()  # reading an empty registry creates nothing
    await Registry(SqliteStore(path), Sealer(new_key())).add("acme", webhook())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_an_unreadable_file_is_a_registry_error(tmp_path: Path) -> None:
    path = tmp_path / "portals.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(RegistryError, match="the registry file"):
        await Registry(SqliteStore(path), None).entries()


def worker_settings(tmp_path: Path, key: str, **values: Any) -> Settings:
    return Settings(REGISTRY_PATH=str(tmp_path / "portals.sqlite3"), REGISTRY_KEY=key, **values)


async def test_the_worker_serves_registered_portals_beside_configured_ones(
    tmp_path: Path,
) -> None:
    key = new_key()
    settings = worker_settings(
        tmp_path,
        key,
        B24_PORTALS={"south": {"webhook_url": "https://s.example.com/rest/1/c0de99/"}},
    )
    await Registry(SqliteStore(tmp_path / "portals.sqlite3"), Sealer(key)).add("acme", webhook())
    merged = await with_registry(settings)
    assert sorted(merged.portals()) == ["acme", "south"]
    assert merged.topology().portals == ("acme", "south")
    assert WEBHOOK_CODE in merged.secrets()  # masked in every log line


async def test_an_empty_registry_needs_no_key_and_changes_nothing(tmp_path: Path) -> None:
    settings = worker_settings(tmp_path, "", B24_WEBHOOK_URL="https://a.example.com/rest/1/c0de99/")
    assert await with_registry(settings) is settings


async def test_a_portal_both_registered_and_configured_is_refused(tmp_path: Path) -> None:
    key = new_key()
    settings = worker_settings(
        tmp_path, key, B24_PORTALS={"acme": {"webhook_url": "https://s.example.com/rest/1/c0de99/"}}
    )
    await Registry(SqliteStore(tmp_path / "portals.sqlite3"), Sealer(key)).add("acme", webhook())
    with pytest.raises(RegistryError, match="portal acme: registered and also configured"):
        await with_registry(settings)


def test_a_malformed_key_is_named_without_its_value() -> None:
    with pytest.raises(RegistryKeyError, match="key 2 of 2 is not a Fernet key") as caught:
        Sealer(f"{new_key()},not-a-key-at-all")
    assert "not-a-key-at-all" not in str(caught.value)


async def test_a_portal_marked_gone_keeps_a_tombstone_without_its_secrets(store: Store) -> None:
    registry = Registry(store, Sealer(new_key()))
    await registry.add("acme", webhook())
    await registry.add("beta", oauth())
    assert await registry.mark_gone("beta") is True
    assert await registry.mark_gone("nobody") is False
    assert await registry.gone() == {"beta"}
    assert await registry.portals() == {"acme": webhook()}  # no lane for a gone portal
    entry = await registry.entry("beta")
    assert entry is not None
    assert entry.gone_at is not None
    raw = await raw_bytes(store)
    assert b'"sealed"' in raw  # acme's, still there
    assert raw.count(b'"sealed"') == 1  # beta's forgotten
    assert await registry.rekey() == 1
    # Installed again: a tombstone needs no --replace.
    await registry.add("beta", oauth())
    assert await registry.gone() == set()
    assert sorted(await registry.portals()) == ["acme", "beta"]


async def test_a_member_id_names_one_portal_only(store: Store) -> None:
    registry = Registry(store, Sealer(new_key()))
    member = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    acme = PortalConfig(**{**webhook().model_dump(), "member_id": member})
    entry = await registry.add("acme", acme)
    assert entry.member_id == member
    with pytest.raises(RegistryError, match=f"{member} is already the member_id of portal acme"):
        await registry.add("beta", PortalConfig(**{**oauth().model_dump(), "member_id": member}))
    with pytest.raises(RegistryError, match="its member_id is the key of portal acme"):
        await registry.add("beta", PortalConfig(**{**oauth().model_dump(), "member_id": "acme"}))
    with pytest.raises(RegistryError, match="already the member_id of portal acme"):
        await registry.add(member, oauth())
    await registry.add("acme", acme, replace=True)  # its own member_id again: fine


async def test_an_application_token_is_kept_sealed_and_dropped_when_gone(store: Store) -> None:
    old, new = new_key(), new_key()
    registry = Registry(store, Sealer(old))
    await registry.add("m1", oauth(), application_token="apptoken-5Qx8")
    await registry.add("acme", webhook())
    assert b"apptoken-5Qx8" not in await raw_bytes(store)
    assert await registry.application_token("m1") == "apptoken-5Qx8"
    assert await registry.application_token("acme") is None
    assert await registry.application_token("nobody") is None
    rotated = Registry(store, Sealer(f"{new},{old}"))
    await rotated.rekey()
    assert await Registry(store, Sealer(new)).application_token("m1") == "apptoken-5Qx8"
    await registry.mark_gone("m1")
    assert await Registry(store, Sealer(new)).application_token("m1") is None


async def test_portals_installed_through_the_application_share_its_credentials(
    store: Store,
) -> None:
    """The application's client id and secret once, for all its portals: not in their
    entries, so a new secret (B24_APP_CLIENT_SECRET) serves every portal at once."""
    key = new_key()
    installed = Registry(store, Sealer(key), app=("app.5f1e", CLIENT_SECRET))
    await installed.add("m1", oauth(), through_app=True)
    raw = await raw_bytes(store)
    assert b"app.5f1e" in raw  # shown, as any client id
    found = await installed.portals()
    assert found["m1"] == oauth()
    renewed = Registry(store, Sealer(key), app=("app.5f1e", "a-new-app-secret"))
    assert (await renewed.portals())["m1"].client_secret == SecretStr("a-new-app-secret")
    with pytest.raises(RegistryError, match="set B24_APP_CLIENT_ID and B24_APP_CLIENT_SECRET"):
        await Registry(store, Sealer(key)).portals()


async def test_an_entry_of_the_application_keeps_no_client_secret_even_sealed(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "portals.sqlite3")
    await Registry(store, Sealer(new_key()), app=("app.5f1e", CLIENT_SECRET)).add(
        "m1", oauth(), through_app=True
    )
    [doc] = (await store.read_all()).values()
    assert sorted(json.loads(doc)["sealed"]) == ["refresh_token"]
