"""Workers on shards. Two worker processes on four shards: every item's updates
are applied by the portal in the order they were published.

The proof of order is the portal's own: each update of a contact adds one
`fm` entry (a web address carrying the update's number), and the portal
appends entries in the order it applies the calls. After the run, a contact's
entries must read 1, 2, ..., K. The success events on RESULT_QUEUE, which a
worker publishes after each call, must show the same order per item.

In-process, one sharded worker keeps the order through a portal outage and a
retry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from schemas.wire import item_routing_key
from tests.reliability.processes import JsonLog, WorkerRun, sandbox_process, worker_env, worker_run
from tests.worker.broker import depth, drain, take
from tests.worker.e2e import (
    control,
    events,
    eventually,
    force_error,
    running_worker,
    settings_for,
    stored,
)
from tests.worker.shards import sharded, sharded_topology
from worker.amqp.topology import Topology

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

ITEMS = 41  # odd: with competing consumers, an item's updates would alternate workers
UPDATES = 8  # per item
SITE = "https://order.example/"
CONTACT = 3


def update(item_id: int, n: int) -> dict[str, Any]:
    return {
        "entityTypeId": CONTACT,
        "id": item_id,
        "fields": {
            "name": f"v{n}",
            "fm": {"n0": {"typeId": "WEB", "valueType": "WORK", "value": f"{SITE}{n}"}},
        },
    }


async def publish_in_rounds(connection: AbstractRobustConnection, topology: Topology) -> None:
    """Update 1 of every item, then update 2 of every item, ...: an item's updates
    are far apart in the stream, and close to other items' updates."""
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.update_queue)
    for n in range(1, UPDATES + 1):
        for item_id in range(1, ITEMS + 1):
            await exchange.publish(
                aio_pika.Message(
                    json.dumps(update(item_id, n)).encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=f"{item_id}-{n}",
                ),
                routing_key=item_routing_key(None, CONTACT, item_id),
                mandatory=True,
            )
    await channel.close()


def started(logs: list[JsonLog]) -> bool:
    for log in logs:
        log.read()
    return all(log.events("consumer.started") for log in logs)


async def wait_for(check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_two_workers_apply_each_items_updates_in_the_order_published(
    amqp_url: str, tmp_path: Path
) -> None:
    topology = sharded_topology(4)
    total = ITEMS * UPDATES
    with sandbox_process(seed_items=ITEMS, latency_ms=5) as portal:
        env = worker_env(
            amqp_url,
            portal.webhook_url,
            topology,
            SHARDS="4",
            PREFETCH="100",
            BATCH_LINGER_MS="5",
            DRAIN_TIMEOUT_S="5",
        )
        async with sharded(amqp_url, topology) as broker:
            with worker_run(env, tmp_path) as run:
                run.start()
                run.start()

                async def both_started() -> bool:
                    return started(run.logs)

                await wait_for(both_started, 20)
                await publish_in_rounds(broker, topology)

                async def all_settled() -> bool:
                    done = await depth(broker, topology.result_queue)
                    return done + await depth(broker, topology.dead_letter_queue) >= total

                await wait_for(all_settled, 25)
                results = await take(broker, topology.result_queue, total, timeout_s=5)
                dead = len(await drain(broker, topology.dead_letter_queue))
            run.read_logs()
        contacts = portal.items(CONTACT)

    assert dead == 0
    assert len(results) == total
    for item_id in range(1, ITEMS + 1):
        contact = contacts[item_id]
        assert contact["name"] == f"v{UPDATES}"
        sites = [e["value"] for e in contact["fm"] if e["value"].startswith(SITE)]
        assert sites == [f"{SITE}{n}" for n in range(1, UPDATES + 1)], (item_id, sites)

    events = [json.loads(message.body) for message in results]
    by_item: dict[int, list[str]] = {}
    for event in events:
        assert event["status"] == "succeeded"
        by_item.setdefault(event["id"], []).append(event["messageId"])
    for item_id, ids in by_item.items():
        assert ids == [f"{item_id}-{n}" for n in range(1, UPDATES + 1)]

    assert_each_item_stayed_with_one_worker(run)


def assert_each_item_stayed_with_one_worker(run: WorkerRun) -> None:
    """Both workers applied updates (they shared the shards), and every update of
    one item was applied by the same worker (its shard's active consumer)."""
    workers_of: dict[int, set[int]] = {}
    for index, log in enumerate(run.logs):
        settled = log.settled()
        assert settled, f"worker {index + 1} applied nothing: {log.events('consumer.shards')}"
        for record in settled:
            workers_of.setdefault(record["item"][1], set()).add(index)
    assert len(workers_of) == ITEMS
    assert all(len(workers) == 1 for workers in workers_of.values())


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as running:
        yield running


async def publish_deal(
    connection: AbstractRobustConnection, topology: Topology, item_id: int, title: str
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.update_queue)
    body = {"entityTypeId": 2, "id": item_id, "fields": {"title": title}}
    await exchange.publish(
        aio_pika.Message(json.dumps(body).encode(), content_type="application/json"),
        routing_key=item_routing_key(None, 2, item_id),
    )
    await channel.close()


async def test_a_portal_outage_holds_the_shards_then_applies_in_order(
    amqp_url: str, portal: RunningSandbox
) -> None:
    """While the portal is down the worker keeps its shards and holds what they
    deliver; once it is back, each item's commands are applied in their order."""
    control(portal, "PATCH", "faults", {"overload": True})
    settings = settings_for(amqp_url, portal, SHARDS=2)
    async with running_worker(settings) as running, sharded(amqp_url, running.topology) as broker:
        topology = running.topology
        for n in range(3):
            for item_id in (1, 2, 3):
                await publish_deal(broker, topology, item_id, f"t{n}")
        await eventually(lambda: running.pipeline.down == "blocked")
        # All nine held by the worker: those it took before the block wait in its
        # pipeline, the rest in its paused consumers. None ended.
        await eventually(lambda: running.pipeline.held + running.consumers.held == 9)
        assert await drain(broker, topology.result_queue) == []
        control(portal, "PATCH", "faults", {"overload": False})
        done = events(await take(broker, topology.result_queue, 9, timeout_s=30))
        assert await drain(broker, topology.dead_letter_queue) == []
    titles: dict[int, list[str]] = {}
    for event in done:
        titles.setdefault(event["id"], []).append(event["item"]["title"])
    assert titles == {item_id: ["t0", "t1", "t2"] for item_id in (1, 2, 3)}
    assert [stored(portal, 2, item_id)["title"] for item_id in (1, 2, 3)] == ["t2"] * 3


async def test_a_later_command_waits_for_the_earlier_ones_retry_through_a_shard(
    amqp_url: str, portal: RunningSandbox
) -> None:
    force_error(portal, "INTERNAL_SERVER_ERROR", item_id=4, times=1)
    settings = settings_for(amqp_url, portal, SHARDS=2)
    async with running_worker(settings) as running, sharded(amqp_url, running.topology) as broker:
        await publish_deal(broker, running.topology, 4, "first")
        await publish_deal(broker, running.topology, 4, "second")
        done = events(await take(broker, running.topology.result_queue, 2))
    assert [(e["item"]["title"], e["attempts"]) for e in done] == [("first", 2), ("second", 1)]
    assert stored(portal, 2, 4)["title"] == "second"
