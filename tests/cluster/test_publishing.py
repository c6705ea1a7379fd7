"""The worker's publisher on a 3-node cluster whose quorum queue lost its leader.

RabbitMQ 3.10 gives a channel its view of a quorum queue's leader at the
channel's first publish to it, from the queue's record, and never revises it
when that first publish could not reach the leader's node: the channel nacks
every later publish to the queue for as long as it lives, even once another
node leads. A worker that reconnected in the moment its node went down (its
first event publish landing before the election) thus had every event nacked.
The publisher replaces a nacked channel; this holds it to that, for the worker
and for `UpdateClient` (the tools publish the same way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial

import aio_pika
import pytest

from tests.cluster.harness import Cluster, installed
from tests.conftest import in_ci
from worker.amqp.nodes import connect_nodes, underlay
from worker.amqp.publishing import Publisher, RefusedError, event_properties
from worker.client import PublishRefusedError, UpdateClient

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not installed() and not in_ci(), reason="RabbitMQ (rabbitmq-server) is not installed"
    ),
]

CONFIRMED_WITHIN_S = 30.0


async def _publish(publisher: Publisher, queue: str, message_id: str) -> None:
    await publisher.publish(
        b"{}",
        routing_key=queue,
        properties=event_properties(message_id, None),
        mandatory=True,
    )


async def _quorum_queue(cluster: Cluster, prefix: str) -> tuple[str, int, int, int]:
    """A new quorum queue: its name, its leader's node, the node that stays up, and
    the follower stopped with the leader."""
    queue = f"{prefix}-{time.monotonic_ns()}"
    declarer = await aio_pika.connect_robust(cluster.urls[0])
    async with declarer:
        channel = await declarer.channel()
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    leader = await asyncio.to_thread(cluster.leader_of, queue)
    stays, follower = [i for i in range(cluster.size) if i != leader]
    return queue, leader, stays, follower


async def _until_confirmed(
    publish: Callable[[], Awaitable[object]], refused: type[Exception], what: str
) -> int:
    """Publish again every 0.5 s while it is refused; how many more refusals there were."""
    deadline = time.monotonic() + CONFIRMED_WITHIN_S
    refusals = 0
    while True:
        try:
            await publish()
            return refusals
        except refused:
            refusals += 1
            assert time.monotonic() < deadline, f"still refused after {refusals} {what}"
            await asyncio.sleep(0.5)


async def _messages_then_deleted(cluster: Cluster, queue: str, leader: int, stays: int) -> int:
    """Start the old leader again; how many messages the queue gives, then the queue
    deleted. They are read, not counted from `list_queues`: a quorum queue's count
    there is refreshed every few seconds, and a message confirmed a moment ago can
    still show as none."""
    await asyncio.to_thread(cluster.start_node, leader)
    reader = await aio_pika.connect_robust(cluster.urls[stays])
    async with reader:
        channel = await reader.channel()
        read = await channel.get_queue(queue, ensure=False)
        count = 0
        while await read.get(no_ack=True, fail=False) is not None:
            count += 1
        await channel.queue_delete(queue)
    return count


async def test_a_channel_that_met_a_lost_leader_is_replaced_and_publishing_goes_on(
    cluster: Cluster,
) -> None:
    queue, leader, stays, follower = await _quorum_queue(cluster, "publishing")
    # Without a majority no node can lead, and the queue's record names the stopped
    # leader: a channel's first publish to the queue goes there, and is nacked.
    await asyncio.to_thread(cluster.stop_node, follower)
    await asyncio.to_thread(cluster.stop_node, leader)
    connection = await connect_nodes(cluster.urls[stays])
    try:
        publisher = Publisher(partial(underlay, connection))
        await publisher.open()
        with pytest.raises(RefusedError):
            await _publish(publisher, queue, "while-no-node-leads")
        # A majority again, with the old leader still down: another node leads.
        await asyncio.to_thread(cluster.start_node, follower)
        new_leader = await asyncio.to_thread(cluster.leader_of, queue)
        assert new_leader != leader
        nacks = await _until_confirmed(
            partial(_publish, publisher, queue, "after-the-election"), RefusedError, "tries"
        )
        print(f"confirmed after {nacks} more nacks")
        await publisher.close()
    finally:
        await connection.close()
    assert await _messages_then_deleted(cluster, queue, leader, stays) == 1


async def test_a_client_that_met_a_lost_leader_publishes_again_once_another_node_leads(
    cluster: Cluster,
) -> None:
    queue, leader, stays, follower = await _quorum_queue(cluster, "client")
    # A long-lived client: connected while the cluster is whole, first publishing
    # to the queue once no node can lead it.
    async with UpdateClient(cluster.urls[stays], queue=queue) as client:
        await asyncio.to_thread(cluster.stop_node, follower)
        await asyncio.to_thread(cluster.stop_node, leader)
        with pytest.raises(PublishRefusedError):
            await client.send(2, 1, {"title": "while no node leads"})
        await asyncio.to_thread(cluster.start_node, follower)
        assert await asyncio.to_thread(cluster.leader_of, queue) != leader
        refused = await _until_confirmed(
            partial(client.send, 2, 2, {"title": "after the election"}),
            PublishRefusedError,
            "sends",
        )
        print(f"confirmed after {refused} more refused sends")
    assert await _messages_then_deleted(cluster, queue, leader, stays) == 1
