"""Replicas share the portal queues: a worker that claimed them all (it started
first) hands those above its share to the next worker in line, mid-stream,
losing no command and applying each item's commands in order.

Two sandbox portals, `north` (the default portal, never handed over: its commands
without a header come on the queue every worker consumes) and `south`.
"""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from sandbox.testing import RunningSandbox
from schemas.wire import PORTAL_HEADER
from tests.worker.broker import connected, drain, take
from tests.worker.conftest import TWO_PORTALS_SEED
from tests.worker.e2e import control, events, eventually, running_worker, stored
from tests.worker.test_portal_queues import two_portals
from worker.amqp.topology import Topology
from worker.runtime.app import Worker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

ITEMS = TWO_PORTALS_SEED
# Each item's commands, one call per version: 8 calls of south's 1 s, longer than the
# grace a channel is given for its last acks before it closes (acks.ACK_GRACE_S).
VERSIONS = 8


async def publish(broker: AbstractRobustConnection, topology: Topology, versions: int) -> None:
    """Each item's versions in order, the two portals interleaved, through the exchange."""
    channel = await broker.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.update_queue)
    for n in range(1, versions + 1):
        for item_id in range(1, ITEMS + 1):
            for portal in ("south", "north"):
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
    control(south, "PATCH", "faults", {"latency_ms": 1000})  # the hand-over comes mid-stream
    settings = two_portals(amqp_url, north, south).model_copy(update={"PORTAL_BALANCE_S": 0.3})
    total = 2 * ITEMS * VERSIONS
    async with (
        running_worker(settings) as first,
        connected(amqp_url, first.topology) as broker,
    ):
        # Alone, the first worker is the active consumer of both portal queues.
        assert sorted(first.consumers.active_portals()) == ["north", "south"]
        await publish(broker, first.topology, VERSIONS)
        await eventually(lambda: succeeded(first, "south") > 0)
        async with running_worker(settings) as second:
            done = events(await take(broker, settings.RESULT_QUEUE, total, timeout_s=60))
            # Its share of two portals between two workers is one: south moved.
            assert first.consumers.active_portals() == ["north"]
            assert second.consumers.active_portals() == ["south"]
            south_first, south_second = succeeded(first, "south"), succeeded(second, "south")
            assert succeeded(second, "north") == 0
        dead = await drain(broker, settings.DEAD_LETTER_QUEUE)
    assert dead == []
    ids = [event["messageId"] for event in done]
    assert len(ids) == len(set(ids)) == total  # each command ended once
    # Both served south: the queue changed hands while its commands were flowing.
    assert south_first > 0
    assert south_second > 0
    assert south_first + south_second == ITEMS * VERSIONS
    # None was sent twice: the calls out ended before the queue changed hands, and what
    # was held went back unsent.
    await eventually(lambda: control(south, "GET", "counters")["in_flight"] == 0)
    assert control(south, "GET", "counters")["calls"]["crm.item.update"] == ITEMS * VERSIONS
    for item_id in range(1, ITEMS + 1):
        # The last command of each item was applied last, on both portals.
        assert stored(south, 2, item_id)["title"] == f"south v{VERSIONS}"
        assert stored(north, 2, item_id)["title"] == f"north v{VERSIONS}"


async def test_a_worker_alone_keeps_every_portal_queue(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    settings = two_portals(amqp_url, north, south).model_copy(update={"PORTAL_BALANCE_S": 0.1})
    async with running_worker(settings) as worker, connected(amqp_url, worker.topology) as broker:
        await publish(broker, worker.topology, 1)
        await take(broker, settings.RESULT_QUEUE, 2 * ITEMS)
        await asyncio.sleep(0.5)  # five balancing rounds: one worker, nothing to share
        assert sorted(worker.consumers.active_portals()) == ["north", "south"]
