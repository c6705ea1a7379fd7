"""A worker serves the registry's portals beside its configured ones, and refuses a
portal that is both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from sandbox.testing import RunningSandbox
from schemas.wire import PORTAL_HEADER
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import control, events, eventually, running_worker, settings_for, stored
from worker.amqp.topology import declare_portal
from worker.registry import Registry, Sealer, SqliteStore, new_key, with_registry
from worker.runtime import app
from worker.runtime.app import Worker
from worker.settings import PortalConfig, Settings


def registry_settings(
    amqp_url: str, north: RunningSandbox, path: Path, key: str, **more: Any
) -> Settings:
    """North configured (the default portal); the registry at ``path``, sealed under
    ``key``; ``more`` settings beside."""
    return settings_for(
        amqp_url,
        north,
        B24_PORTAL_KEY="north",
        B24_DEFAULT_PORTAL="north",
        REGISTRY_PATH=str(path),
        REGISTRY_KEY=key,
        **more,
    )


async def registered(path: Path, key: str, portal: str, sandbox: RunningSandbox) -> Registry:
    """The registry at ``path``, with ``sandbox`` registered as ``portal``."""
    registry = Registry(SqliteStore(path), Sealer(key), allow_http=True)
    await registry.add(portal, PortalConfig(webhook_url=SecretStr(sandbox.webhook_url)))
    return registry


@pytest.mark.rabbitmq
@pytest.mark.sandbox
async def test_a_registered_portal_gets_its_commands(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox, tmp_path: Path
) -> None:
    key = new_key()
    path = tmp_path / "portals.sqlite3"
    await registered(path, key, "south", south)
    settings = registry_settings(amqp_url, north, path, key)
    merged = await with_registry(settings)
    async with (
        running_worker(merged) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        assert worker.topology.portals == ("north", "south")  # a queue of its own
        command = {"entityTypeId": 2, "id": 7, "fields": {"title": "registered"}}
        await publish(broker, settings.UPDATE_QUEUE, command, headers={PORTAL_HEADER: "south"})
        done = events(await take(broker, settings.RESULT_QUEUE, 1))
    assert [(event["status"], event["portal"]) for event in done] == [("succeeded", "south")]
    assert stored(south, 2, 7)["title"] == "registered"
    assert stored(north, 2, 7)["title"] != "registered"


def test_run_refuses_a_portal_registered_and_configured(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "portals.sqlite3"
    env = {
        "PATH": os.environ["PATH"],
        "REGISTRY_PATH": str(path),
        "REGISTRY_KEY": key,
        "B24_PORTALS": json.dumps(
            {"acme": {"webhook_url": "https://a.example.com/rest/1/c0de77/"}}
        ),
        "HTTP_PORT": "0",
    }
    unconfigured = {name: value for name, value in env.items() if name != "B24_PORTALS"}
    added = subprocess.run(
        [sys.executable, "-m", "worker", "portals", "add", "acme", "--webhook-url", "-"],
        input="https://b.example.com/rest/1/c0de88/\n",
        capture_output=True, text=True, env=unconfigured, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    run = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    line = json.loads(run.stdout.strip().splitlines()[-1])
    assert line["event"] == "registry.unusable"
    assert "portal acme: registered and also configured" in line["error"]
    assert "c0de77" not in run.stdout + run.stderr
    assert "c0de88" not in run.stdout + run.stderr


@pytest.mark.rabbitmq
@pytest.mark.sandbox
async def test_a_changed_entry_is_served_anew_and_a_removed_one_not_at_all(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox, tmp_path: Path
) -> None:
    """`add --replace` moves a portal (here to another host) while the worker runs."""
    key = new_key()
    path = tmp_path / "portals.sqlite3"
    registry = Registry(SqliteStore(path), Sealer(key), allow_http=True)
    settings = registry_settings(amqp_url, north, path, key)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        try:
            queue = settings.UPDATE_QUEUE

            async def applied(item_id: int, title: str) -> list[tuple[str, str]]:
                command = {"entityTypeId": 2, "id": item_id, "fields": {"title": title}}
                await publish(broker, queue, command, headers={PORTAL_HEADER: "west"})
                done = events(await take(broker, settings.RESULT_QUEUE, 1, timeout_s=10))
                return [(event["status"], event["portal"]) for event in done]

            await registry.add("west", PortalConfig(webhook_url=SecretStr(south.webhook_url)))
            assert await applied(5, "first home") == [("succeeded", "west")]
            assert stored(south, 2, 5)["title"] == "first home"

            moved = PortalConfig(webhook_url=SecretStr(north.webhook_url))
            await registry.add("west", moved, replace=True)
            await eventually(lambda: host_of(worker, "west") == host_of_url(north.webhook_url), 10)
            assert await applied(6, "second home") == [("succeeded", "west")]
            assert stored(north, 2, 6)["title"] == "second home"
            assert stored(south, 2, 6)["title"] != "second home"

            await registry.remove("west")
            await eventually(lambda: "west" not in worker.lanes, 10)
        finally:
            channel = await broker.channel()
            await channel.queue_delete(worker.topology.portal_queue("west"))


def host_of(worker: Worker, key: str) -> str | None:
    lane = worker.lanes.get(key)
    return None if lane is None else lane.portal.host


def host_of_url(url: str) -> str:
    return url.split("/")[2]


@pytest.mark.rabbitmq
@pytest.mark.sandbox
async def test_a_portal_marked_gone_ends_its_commands_as_portal_gone_unsent(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox, tmp_path: Path
) -> None:
    key = new_key()
    path = tmp_path / "portals.sqlite3"
    registry = await registered(path, key, "south", south)
    settings = registry_settings(amqp_url, north, path, key)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        try:
            await eventually(lambda: "south" in worker.lanes, 10)  # registered: taken up
            command = {"entityTypeId": 2, "id": 8, "fields": {"title": "served"}}
            headers = {PORTAL_HEADER: "south"}
            await publish(broker, settings.UPDATE_QUEUE, command, headers=headers)
            assert len(await take(broker, settings.RESULT_QUEUE, 1, timeout_s=10)) == 1
            calls = int(control(south, "GET", "counters")["requests"])

            await registry.mark_gone("south")
            await eventually(lambda: "south" not in worker.lanes, 10)
            for n in (9, 10):
                late = {"entityTypeId": 2, "id": n, "fields": {"title": "after uninstall"}}
                await publish(broker, settings.UPDATE_QUEUE, late, headers=headers)
            failed = events(await take(broker, settings.DEAD_LETTER_QUEUE, 2, timeout_s=10))
        finally:
            channel = await broker.channel()
            await channel.queue_delete(worker.topology.portal_queue("south"))
    assert sorted(event["id"] for event in failed) == [9, 10]
    assert {(e["error"]["class"], e["error"]["code"], e["error"]["retryable"]) for e in failed} == {
        ("portal_gone", "PORTAL_GONE", False)
    }
    assert {event["portal"] for event in failed} == {"south"}
    assert int(control(south, "GET", "counters")["requests"]) == calls  # never sent


@pytest.mark.rabbitmq
@pytest.mark.sandbox
async def test_a_portal_whose_queue_could_not_be_declared_is_taken_up_at_the_next_look(
    amqp_url: str,
    north: RunningSandbox,
    south: RunningSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker fails as a portal is taken up: nothing of it is half built, and the
    registry is looked at again until it is served (its version unchanged)."""
    key = new_key()
    path = tmp_path / "portals.sqlite3"
    settings = registry_settings(amqp_url, north, path, key)
    failures: list[str] = []
    real = declare_portal

    async def failing_once(*args: Any) -> int:
        if not failures:
            failures.append(args[2])
            raise ConnectionError("the broker went away")
        return await real(*args)

    monkeypatch.setattr(app, "declare_portal", failing_once)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        try:
            registry = Registry(SqliteStore(path), Sealer(key), allow_http=True)
            await registry.add("south", PortalConfig(webhook_url=SecretStr(south.webhook_url)))
            await eventually(lambda: "south" in worker.lanes, 10)
            command = {"entityTypeId": 2, "id": 2, "fields": {"title": "at the second look"}}
            await publish(broker, settings.UPDATE_QUEUE, command, headers={PORTAL_HEADER: "south"})
            done = events(await take(broker, settings.RESULT_QUEUE, 1, timeout_s=10))
        finally:
            channel = await broker.channel()
            await channel.queue_delete(worker.topology.portal_queue("south"))
    assert failures == ["south"]
    assert [(event["status"], event["portal"]) for event in done] == [("succeeded", "south")]
    assert stored(south, 2, 2)["title"] == "at the second look"
