"""`b24-worker dlq replay`: originals back on UPDATE_QUEUE, the rest left in order,
nothing lost when the run is killed."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest

from sandbox.testing import RunningSandbox
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import events, force_error, running_worker, settings_for, stored
from tests.worker.tools.helpers import declared_topology, drain, run_tool, tool_env, until_depth
from tests.worker.tools.letters import as_stored, command, failure, fill

pytestmark = pytest.mark.rabbitmq


async def test_replay_sends_the_originals_and_keeps_the_rest_in_order(amqp_url: str) -> None:
    letters = [
        failure(1, "transient"),
        failure(2, "validation"),
        failure(3, "transient"),
        failure(4, "not_found"),
        failure(5, "transient", body="not json, kept as text"),
        failure(6, "validation"),
        failure(7, "transient"),
    ]
    async with declared_topology(amqp_url) as (topology, broker):
        await fill(broker, topology.dead_letter_queue, letters)
        ran = await run_tool(
            "dlq", "replay", "--class", "transient", env=tool_env(amqp_url, topology)
        )
        replayed = await drain(broker, topology.update_queue)
        left = await drain(broker, topology.dead_letter_queue)
    assert ran.returncode == 1  # a matching letter could not be replayed
    assert ran.stdout.startswith(
        f"replayed 3 dead letters to {topology.update_queue}; read 7, matched 4, not replayable 1"
    )
    assert [json.loads(m.body) for m in replayed] == [command(1), command(3), command(7)]
    first = replayed[0]
    assert (first.message_id, first.correlation_id, first.reply_to) == ("m-1", "c-1", "svc.replies")
    assert (first.app_id, first.content_type) == ("orders", "application/json")
    assert as_stored(first)[2] == {"trace": "t-1"}  # no attempts, no x-death: a fresh start
    assert first.timestamp is not None
    assert first.timestamp.isoformat().startswith("2026-01-02T03:04:05")
    assert first.delivery_mode == 2
    kept = [letters[1], letters[3], letters[4], letters[5]]
    assert [as_stored(m)[0] for m in left] == kept
    assert [m.message_id for m in left] == ["dl-2", "dl-4", "dl-5", "dl-6"]


async def test_replay_by_code_and_limit(amqp_url: str) -> None:
    letters = [failure(n, "validation" if n % 2 else "not_found") for n in range(1, 11)]
    async with declared_topology(amqp_url) as (topology, broker):
        await fill(broker, topology.dead_letter_queue, letters)
        ran = await run_tool(
            "dlq", "replay", "--code", "NOT_FOUND", "--limit", "2", env=tool_env(amqp_url, topology)
        )
        replayed = await drain(broker, topology.update_queue)
        left = await drain(broker, topology.dead_letter_queue)
    assert ran.returncode == 0, ran.stdout
    assert [json.loads(m.body)["id"] for m in replayed] == [2, 4]
    assert [m.message_id for m in left] == [f"dl-{n}" for n in (1, 3, 5, 6, 7, 8, 9, 10)]


async def test_a_killed_replay_loses_nothing(amqp_url: str) -> None:
    """SIGKILL mid-run: each letter is still dead-lettered, or its command is on
    UPDATE_QUEUE (or both, for the one between confirm and ack)."""
    total = 1500
    async with declared_topology(amqp_url) as (topology, broker):
        await fill(
            broker,
            topology.dead_letter_queue,
            [failure(n, "transient") for n in range(1, total + 1)],
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "dlq",
            "replay",
            env=tool_env(amqp_url, topology),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await until_depth(broker, topology.update_queue, 100)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        # The broker gives back what the killed tool held, a moment after: take
        # both queues until every letter is found on one of them.
        replayed_ids: list[int] = []
        left_ids: list[int] = []
        for _ in range(100):
            replayed_ids += [
                json.loads(m.body)["id"] for m in await drain(broker, topology.update_queue)
            ]
            left_ids += [
                json.loads(m.body)["id"] for m in await drain(broker, topology.dead_letter_queue)
            ]
            if set(replayed_ids) | set(left_ids) == set(range(1, total + 1)):
                break
            await asyncio.sleep(0.05)
    assert 0 < len(left_ids) < total, "the kill must fall inside the run"
    assert set(replayed_ids) | set(left_ids) == set(range(1, total + 1))
    assert len(set(replayed_ids) & set(left_ids)) <= 1  # the one between confirm and ack
    assert replayed_ids == sorted(replayed_ids)
    assert left_ids == sorted(left_ids)


@pytest.mark.sandbox
async def test_a_replayed_letter_is_applied_by_the_worker(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    force_error(portal, "CRM_FIELD_ERROR_REQUIRED", item_id=3, times=1)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(
            broker,
            settings.UPDATE_QUEUE,
            {"entityTypeId": 2, "id": 3, "fields": {"title": "Second time"}},
            message_id="m-replay",
            correlation_id="c-replay",
        )
        await until_depth(broker, settings.DEAD_LETTER_QUEUE, 1)
        ran = await run_tool("dlq", "replay", env=tool_env(amqp_url, worker.topology))
        [success] = events(await take(broker, settings.RESULT_QUEUE, 1))
        assert await drain(broker, settings.DEAD_LETTER_QUEUE) == []
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.startswith("replayed 1 dead letters")
    assert (success["messageId"], success["correlationId"]) == ("m-replay", "c-replay")
    assert success["attempts"] == 1  # fresh attempts
    assert stored(portal, 2, 3)["title"] == "Second time"
