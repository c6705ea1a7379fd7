"""`b24-worker portals`: add, list, show, remove, keygen, rekey, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CODE = "c0dewebhook51"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    key = portals({"PATH": os.environ["PATH"]}, "keygen").stdout.strip()
    return {
        "PATH": os.environ["PATH"],
        "REGISTRY_PATH": str(tmp_path / "portals.sqlite3"),
        "REGISTRY_KEY": key,
    }


def portals(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "portals", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=60,
        check=False,
    )


def test_a_portal_is_added_listed_shown_and_removed(env: dict[str, str], tmp_path: Path) -> None:
    added = portals(
        env, "add", "acme", "--webhook-url", "-", "--rate-burst", "10",
        stdin=f"https://acme.bitrix24.ru/rest/1/{CODE}/\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added acme (webhook, acme.bitrix24.ru, rate_burst 10")

    listed = portals(env, "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].startswith("acme  webhook, acme.bitrix24.ru")
    assert listed.stdout.splitlines()[-1] == "1 portal"
    as_json = [json.loads(line) for line in portals(env, "list", "--json").stdout.splitlines()]
    assert [entry["key"] for entry in as_json] == ["acme"]

    shown = portals(env, "show", "acme")
    assert json.loads(shown.stdout)["webhook_url"] == "https://acme.bitrix24.ru/rest/1/***/"
    for output in (added, listed, shown):
        assert CODE not in output.stdout + output.stderr
    assert CODE.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("portals*"))

    removed = portals(env, "remove", "acme")
    assert (removed.returncode, removed.stdout) == (0, "removed acme\n")
    again = portals(env, "remove", "acme")
    assert again.returncode == 1
    assert "no portal acme in the registry" in again.stderr
    assert portals(env, "list").stdout == "no portals registered\n"


def test_a_configured_key_and_a_bad_portal_are_refused_in_one_line(env: dict[str, str]) -> None:
    configured = {
        **env,
        "B24_PORTALS": json.dumps({"acme": {"webhook_url": "https://a.b/rest/1/x/"}}),
    }
    taken = portals(configured, "add", "acme", "--webhook-url", "https://c.d/rest/1/y/")
    assert taken.returncode == 2
    assert "portal acme is configured already" in taken.stderr
    half = portals(env, "add", "beta", "--portal-url", "https://beta.example.com")
    assert half.returncode == 2
    assert half.stderr.count("\n") == 1
    assert "all of portal_url, client_id, client_secret and refresh_token" in half.stderr
    keyless = portals(
        {**env, "REGISTRY_KEY": ""}, "add", "gamma", "--webhook-url", "https://g.h/rest/1/z/"
    )
    assert keyless.returncode == 2
    assert "REGISTRY_KEY is not set" in keyless.stderr


def test_rekey_moves_every_secret_under_the_new_key(env: dict[str, str]) -> None:
    old = env["REGISTRY_KEY"]
    portals(env, "add", "acme", "--webhook-url", f"https://acme.bitrix24.ru/rest/1/{CODE}/")
    new = portals(env, "keygen").stdout.strip()
    rekeyed = portals({**env, "REGISTRY_KEY": f"{new},{old}"}, "rekey")
    assert rekeyed.stdout == "sealed the secrets of 1 portal under the first key\n"
    # The old key alone opens nothing now: adding beside it would mix two keys.
    refused = portals({**env, "REGISTRY_KEY": old}, "rekey")
    assert refused.returncode == 2
    assert "opens none" in refused.stderr
    assert portals({**env, "REGISTRY_KEY": new}, "rekey").returncode == 0
