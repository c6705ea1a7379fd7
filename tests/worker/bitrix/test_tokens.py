"""The file token store: atomic 0600 writes, reading back, and loud failures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from worker.bitrix import FileTokenStore, StoredToken, TokenRenewalError

TOKEN = StoredToken(refresh_token="refreshsecret0001", origin="ab" * 32, saved_at=1234.5)


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
    newer = StoredToken(refresh_token="refreshsecret0002", origin=TOKEN.origin, saved_at=2000.0)
    await store.save(newer)
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
    with pytest.raises(TokenRenewalError, match="cannot write") as caught:
        await FileTokenStore(tmp_path).save(TOKEN)
    assert "refreshsecret0001" not in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == []


def test_a_stored_token_does_not_show_its_secret() -> None:
    assert "refreshsecret0001" not in repr(TOKEN)
