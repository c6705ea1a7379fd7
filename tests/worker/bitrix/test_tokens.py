"""The file token store: atomic 0600 writes, reading back, and loud failures."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from worker.bitrix import FileTokenStore, StoredToken, TokenRenewalError

TOKEN = StoredToken(
    refresh_token="refreshsecret0001",
    origin="ab" * 32,
    saved_at=1234.5,
    version=1,
    access_token="accesssecret0001",
)


async def test_a_saved_token_reads_back_from_a_file_only_its_owner_can_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "token.json"
    store = FileTokenStore(path)
    await store.save(TOKEN)
    assert await FileTokenStore(path).load() == TOKEN
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["refresh_token"] == "refreshsecret0001"


async def test_saving_again_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = FileTokenStore(path)
    await store.save(TOKEN)
    newer = StoredToken("refreshsecret0002", TOKEN.origin, saved_at=2000.0, version=2)
    assert await store.save(newer)
    assert await store.load() == newer
    assert sorted(os.listdir(tmp_path)) == ["token.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_missing_file_means_no_stored_token(tmp_path: Path) -> None:
    assert await FileTokenStore(tmp_path / "absent.json").load() is None


@pytest.mark.parametrize("content", ["{not json", '{"refresh_token": "x"}', "[]"])
async def test_a_damaged_file_fails_loudly_without_showing_its_content(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "token.json"
    path.write_text(content)
    with pytest.raises(TokenRenewalError, match="remove it") as caught:
        await FileTokenStore(path).load()
    assert content not in str(caught.value)


async def test_a_path_that_is_a_folder_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(TokenRenewalError, match="cannot read the token file") as caught:
        await FileTokenStore(tmp_path).save(TOKEN)
    assert "refreshsecret0001" not in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == []


def test_a_stored_token_does_not_show_its_secret() -> None:
    assert "refreshsecret0001" not in repr(TOKEN)
    assert "accesssecret0001" not in repr(TOKEN)


async def test_a_save_that_does_not_replace_the_stored_version_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token.json"
    store = FileTokenStore(path)
    assert not await store.save(dataclasses.replace(TOKEN, version=2))  # nothing stored yet
    assert await store.save(TOKEN)
    stalled = StoredToken("stalledholder01", TOKEN.origin, saved_at=3000.0, version=1)
    assert not await store.save(stalled)  # version 1 is stored: this one replaces version 0
    assert await store.load() == TOKEN


def test_a_value_written_before_versions_reads_as_version_0() -> None:
    old = json.dumps({"refresh_token": "r", "origin": "o", "saved_at": 1.0})
    assert StoredToken.from_json(old) == StoredToken("r", "o", 1.0, version=0, access_token=None)


async def test_the_lock_file_lets_one_holder_at_a_time_across_stores(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    first, second = FileTokenStore(path), FileTokenStore(path)
    order: list[str] = []

    async def hold(store: FileTokenStore, name: str) -> None:
        async with store.hold():
            order.append(f"{name} in")
            await asyncio.sleep(0.2)
            order.append(f"{name} out")

    await asyncio.gather(hold(first, "a"), hold(second, "b"))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
