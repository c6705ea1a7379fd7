"""Replicas share the portal queues: a worker that claimed them all (it started
first) hands those above its share to the next worker in line, mid-stream,
losing no command and applying each item's commands in order.

Sandbox portals: `north` (the default portal, never handed over: its commands
without a header come on the queue every worker consumes), `south` and `east`.
"""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from schemas.wire import PORTAL_HEADER
from tests.worker.broker import connected, drain, take
from tests.worker.conftest import TWO_PORTALS_SEED
from tests.worker.e2e import (
    control,
    events,
    eventually,
    running_worker,
    settings_for,
    stored,
)
from tests.worker.test_portal_queues import two_portals
from worker.amqp.topology import Topology
from worker.runtime.app import Worker
from worker.settings import Settings

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

ITEMS = TWO_PORTALS_SEED
# Each item's commands, one call per version: 8 calls of south's 1 s, longer than the
# grace a channel is given for its last acks before it closes (acks.ACK_GRACE_S).
VERSIONS = 8


def three_portals(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox, east: RunningSandbox
) -> Settings:
    """North the default portal, south and east in B24_PORTALS; a small prefetch, so
    that most of each portal's commands wait on the broker; balancing every 0.3 s."""
    return settings_for(
        amqp_url,
        north,
        B24_PORTAL_KEY="north",
        B24_DEFAULT_PORTAL="north",
        B24_PORTALS={
            "south": {"webhook_url": south.webhook_url},
            "east": {"webhook_url": east.webhook_url},
        },
        PORTAL_PREFETCH=20,
        PORTAL_BALANCE_S=0.3,
    )


async def publish(
    broker: AbstractRobustConnection, topology: Topology, portals: list[str], versions: int
) -> None:
    """Each item's versions in order, the portals interleaved, through the exchange."""
    channel = await broker.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.update_queue)
    for n in range(1, versions + 1):
        for item_id in range(1, ITEMS + 1):
            for portal in portals:
                body = {"entityTypeId": 2, "id": item_id, "fields": {"title": f"{portal} v{n}"}}
                await exchange.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        content_type="application/json",
                        message_id=f"{portal}-{item_id}-v{n}",
                        headers={PORTAL_HEADER: portal},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=f"2:{item_id}",
                )
    await channel.close()


def succeeded(worker: Worker, portal: str) -> float:
    value = worker.metrics.registry.get_sample_value("b24_succeeded_total", {"portal": portal})
    return value or 0.0


async def test_a_worker_hands_a_portal_queue_over_to_a_replica_that_started_later(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    config = SandboxConfig(seed_items=TWO_PORTALS_SEED, limits_enabled=False)
    async with running_sandbox(config) as east:
        portals = {"north": north, "south": south, "east": east}
        for slow in (south, east):
            control(slow, "PATCH", "faults", {"latency_ms": 1000})  # handed over mid-stream
        settings = three_portals(amqp_url, north, south, east)
        total = len(portals) * ITEMS * VERSIONS
        async with (
            running_worker(settings) as first,
            connected(amqp_url, first.topology) as broker,
        ):
            # Alone, the first worker is the active consumer of every portal queue.
            assert sorted(first.consumers.active_portals()) == ["east", "north", "south"]
            await publish(broker, first.topology, list(portals), VERSIONS)
            await eventually(lambda: succeeded(first, "south") > 0 < succeeded(first, "east"))
            async with running_worker(settings) as second:
                done = events(await take(broker, settings.RESULT_QUEUE, total, timeout_s=60))
                # Two queues with commands waiting, two workers: one each. The
                # default portal (north) stays.
                kept, moved = first.consumers.active_portals(), second.consumers.active_portals()
                served = {p: (succeeded(first, p), succeeded(second, p)) for p in portals}
            dead = await drain(broker, settings.DEAD_LETTER_QUEUE)
        assert dead == []
        ids = [event["messageId"] for event in done]
        assert len(ids) == len(set(ids)) == total  # each command ended once
        assert len(moved) == 1
        assert moved[0] in ("south", "east")
        assert sorted([*kept, *moved]) == ["east", "north", "south"]
        # The moved queue changed hands while its commands were flowing.
        before, after = served[moved[0]]
        assert before > 0
        assert after > 0
        assert before + after == ITEMS * VERSIONS
        for name in ("south", "east"):
            # None was sent twice: the calls out ended before the queue changed
            # hands, and what was held went back unsent.
            portal = portals[name]
            await eventually(lambda p=portal: control(p, "GET", "counters")["in_flight"] == 0)
            assert control(portal, "GET", "counters")["calls"]["crm.item.update"] == (
                ITEMS * VERSIONS
            )
        for name, portal in portals.items():
            for item_id in range(1, ITEMS + 1):
                # The last command of each item was applied last.
                assert stored(portal, 2, item_id)["title"] == f"{name} v{VERSIONS}"


async def test_a_worker_alone_keeps_every_portal_queue(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    settings = two_portals(amqp_url, north, south).model_copy(update={"PORTAL_BALANCE_S": 0.1})
    async with running_worker(settings) as worker, connected(amqp_url, worker.topology) as broker:
        await publish(broker, worker.topology, ["north", "south"], 1)
        await take(broker, settings.RESULT_QUEUE, 2 * ITEMS)
        await asyncio.sleep(0.5)  # five balancing rounds: one worker, nothing to share
        assert sorted(worker.consumers.active_portals()) == ["north", "south"]
