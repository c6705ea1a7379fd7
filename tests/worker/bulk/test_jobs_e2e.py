"""Bulk jobs end to end: published by `publish --job`, counted by the worker,
read, replayed and aborted with `b24-worker jobs` (the real broker, a sandbox
portal, the tools run as an operator runs them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, drain, take
from tests.worker.e2e import (
    control,
    events,
    force_error,
    running_worker,
    settings_for,
)
from tests.worker.tools.helpers import run_tool, tool_env, until_depth
from worker.bulk.store import SqliteJobs

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

ITEMS = 30


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=ITEMS, limits_enabled=False)) as running:
        yield running


def write_commands(path: Path, ids: range, title: str) -> Path:
    lines = [
        json.dumps({"entityTypeId": 2, "id": item_id, "fields": {"title": f"{title} {item_id}"}})
        for item_id in ids
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def job_json(env: dict[str, str], job: str) -> dict[str, Any]:
    ran = await run_tool("jobs", "show", job, "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    shown: dict[str, Any] = json.loads(ran.stdout)
    return shown


async def test_a_job_is_counted_and_its_failures_replayed_from_its_results(
    amqp_url: str, portal: RunningSandbox, tmp_path: Path
) -> None:
    store = tmp_path / "portals.sqlite3"
    settings = settings_for(amqp_url, portal, REGISTRY_PATH=str(store))
    # Items 3 and 7 refuse their first update: two failures, applied when replayed.
    refuse = {"error": "CRM_FIELD_ERROR_REQUIRED", "entity_type_id": 2, "times": 1}
    rules = [{**refuse, "item_id": 3}, {**refuse, "item_id": 7}]
    control(portal, "PATCH", "faults", {"item_errors": rules})
    commands = write_commands(tmp_path / "prices.jsonl", range(1, ITEMS + 1), "Price")
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        env = tool_env(amqp_url, worker.topology, REGISTRY_PATH=str(store))
        ran = await run_tool("publish", str(commands), "--job", "prices-1", env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "as job prices-1" in ran.stdout
        successes = events(await take(broker, settings.RESULT_QUEUE, ITEMS - 2))
        await until_depth(broker, settings.DEAD_LETTER_QUEUE, 2)
        shown = await job_json(env, "prices-1")
        assert (shown["state"], shown["queued"], shown["ended"]) == ("done", ITEMS, ITEMS)
        assert (shown["succeeded"], shown["failed"]) == (ITEMS - 2, {"validation": 2})
        assert {event["job"] for event in successes} == {"prices-1"}

        ran = await run_tool("jobs", "results", "prices-1", "--failed", env=env)
        failures = [json.loads(line) for line in ran.stdout.splitlines()]
        assert sorted(f["command"]["id"] for f in failures) == [3, 7]
        assert {f["class"] for f in failures} == {"validation"}
        listed = tmp_path / "failed.jsonl"
        listed.write_text(ran.stdout)

        # A letter of no job stays where it is.
        force_error(portal, "CRM_FIELD_ERROR_REQUIRED", item_id=9, times=1)
        other = write_commands(tmp_path / "other.jsonl", range(9, 10), "Other")
        assert (await run_tool("publish", str(other), env=env)).returncode == 0
        await until_depth(broker, settings.DEAD_LETTER_QUEUE, 3)

        ran = await run_tool("dlq", "replay", "--from", str(listed), env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert ran.stdout.startswith("replayed 2 dead letters")
        again = events(await take(broker, settings.RESULT_QUEUE, 2))
        assert sorted(event["id"] for event in again) == [3, 7]
        shown = await job_json(env, "prices-1")
        assert (shown["succeeded"], shown["failed"], shown["ended"]) == (ITEMS, {}, ITEMS)
        left = events(await drain(broker, settings.DEAD_LETTER_QUEUE))
    assert [event["id"] for event in left] == [9]
    assert left[0]["job"] is None


async def test_an_aborted_job_sends_none_of_its_remaining_commands(
    amqp_url: str, tmp_path: Path
) -> None:
    # One call of 5 a second: the job takes 20 s unless aborted.
    config = SandboxConfig(seed_items=100, rate_burst=1, rate_per_second=1.0)
    store = tmp_path / "portals.sqlite3"
    async with running_sandbox(config) as portal:
        settings = settings_for(
            amqp_url,
            portal,
            REGISTRY_PATH=str(store),
            BATCH_SIZE=5,
            B24_RATE_BURST=1,
            B24_RATE_PER_SECOND=1.0,
        )
        commands = write_commands(tmp_path / "slow.jsonl", range(1, 101), "Slow")
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
        ):
            env = tool_env(amqp_url, worker.topology, REGISTRY_PATH=str(store))
            assert (
                await run_tool("publish", str(commands), "--job", "slow", env=env)
            ).returncode == 0
            await take(broker, settings.RESULT_QUEUE, 5, timeout_s=30)
            ran = await run_tool("jobs", "abort", "slow", env=env)
            assert ran.returncode == 0, ran.stderr
            jobs = SqliteJobs(store)

            async def ended() -> bool:
                state = await jobs.state("slow")
                return state is not None and state.done

            for _ in range(300):
                if await ended():
                    break
                await asyncio.sleep(0.1)
            state = await jobs.state("slow")
            await jobs.close()
            aborted = events(await drain(broker, settings.DEAD_LETTER_QUEUE))
            updates = portal.state.counters.calls["crm.item.update"]
    assert state is not None
    assert state.done
    assert state.succeeded + state.failed.get("aborted", 0) == 100
    assert state.failed.get("aborted", 0) >= 50  # most of the job was never sent
    # The portal saw exactly the updates that succeeded: the aborted ones were never sent.
    assert updates == state.succeeded
    assert len(aborted) == state.failed["aborted"]
    assert {event["error"]["class"] for event in aborted} == {"aborted"}
    assert {event["job"] for event in aborted} == {"slow"}
