"""The cluster harness against the RabbitMQ installed here: a quorum queue declared once
the cluster has formed keeps every confirmed message when its leader stops, nodes come
back after a stop and after a kill, and the nodes are the cluster's own."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from scripts.amqp_ping import answers
from tests.cluster.harness import Cluster, installed
from tests.conftest import in_ci

pytestmark = [
    pytest.mark.cluster,
    # In CI a machine without RabbitMQ fails these tests rather than skipping them.
    pytest.mark.skipif(
        not installed() and not in_ci(), reason="RabbitMQ (rabbitmq-server) is not installed"
    ),
]

MESSAGES = 100


async def take_all(url: str, queue: str, count: int, timeout_s: float = 60.0) -> list[bytes]:
    """Every message on the queue, through the node at `url`: `count` of them (acked),
    then none left. basic.get answers only once the queue has a leader again."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        got: list[AbstractIncomingMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(got) < count and loop.time() < deadline:
            message = await source.get(fail=False, timeout=10)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            got.append(message)
        assert await source.get(fail=False) is None, "more messages than were published"
        return [message.body for message in got]


async def test_a_quorum_queue_keeps_every_confirmed_message_when_its_leader_stops(
    cluster: Cluster,
) -> None:
    queue = f"harness.smoke.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(cluster.urls[0])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        for n in range(MESSAGES):
            confirmation = await channel.default_exchange.publish(
                aio_pika.Message(
                    str(n).encode(),
                    message_id=str(n),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )
            assert isinstance(confirmation, Basic.Ack)
    # Declared after the cluster formed, the queue has a replica on every node.
    assert await asyncio.to_thread(cluster.members_of, queue) == [0, 1, 2]

    leader = await asyncio.to_thread(cluster.leader_of, queue)
    await asyncio.to_thread(cluster.stop_node, leader)
    assert leader not in cluster.running()
    assert not answers(cluster.urls[leader], timeout_s=1.0)
    assert await asyncio.to_thread(cluster.leader_of, queue) != leader
    assert leader not in await asyncio.to_thread(cluster.members_of, queue, online=True)

    other = cluster.running()[0]
    bodies = await take_all(cluster.urls[other], queue, MESSAGES)
    assert sorted(int(body) for body in bodies) == list(range(MESSAGES))

    await asyncio.to_thread(cluster.start_node, leader)
    assert cluster.running() == [0, 1, 2]
    assert await asyncio.to_thread(cluster.members_of, queue, online=True) == [0, 1, 2]
    # The node that came back serves the queue: empty, as it was left.
    connection = await aio_pika.connect(cluster.urls[leader])
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue)
        assert await declared.get(fail=False) is None
        await channel.queue_delete(queue)


def test_a_killed_node_comes_back_into_the_cluster(cluster: Cluster) -> None:
    cluster.kill_node(2)
    assert cluster.running() == [0, 1]
    assert not answers(cluster.urls[2], timeout_s=1.0)
    cluster.start_node(2)
    assert cluster.running() == [0, 1, 2]
    assert set(cluster.cluster_status(0)["running_nodes"]) == set(cluster.names)


def test_the_cluster_leaves_the_machine_broker_alone(cluster: Cluster) -> None:
    """Every node is the cluster's own, on its own ports, in its own directory."""
    ports = [cluster.base_port + i for i in range(cluster.size)]
    assert 5672 not in ports
    assert cluster.names == [f"b24c{port}@localhost" for port in ports]
    for i, port in enumerate(ports):
        listeners = cluster.cluster_status(i)["listeners"][cluster.name(i)]
        assert {listener["port"] for listener in listeners} == {port, port + 20000}
        assert cluster.node_of_port(port) == i
    with pytest.raises(ValueError, match="-n"):
        cluster.rabbitmqctl(0, "-n", "rabbit@localhost", "status")
