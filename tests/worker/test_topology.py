"""Declaring the queues against the real broker."""

from __future__ import annotations

import dataclasses

import aio_pika
import pytest

from tests.worker.broker import connected, publish, take, unique_topology
from worker.topology import TopologyError, declare

pytestmark = pytest.mark.rabbitmq


async def test_declaring_twice_is_harmless(amqp_url: str) -> None:
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        await declare(connection, topology)
        channel = await connection.channel()
        for name in topology.queues():
            await channel.get_queue(name, ensure=True)  # raises when missing


async def test_an_existing_queue_with_other_arguments_is_named(amqp_url: str) -> None:
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        channel = await connection.channel()
        await channel.declare_queue(topology.update_queue, durable=True)  # a classic queue
        with pytest.raises(TopologyError, match=topology.update_queue):
            await declare(connection, topology)


async def test_a_tier_returns_its_copy_to_the_retry_queue_after_its_delay(amqp_url: str) -> None:
    topology = unique_topology(retry_delays_s=(1,))
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        await publish(connection, topology.tier_queue(1), b"{}", message_id="m1")
        assert await take(connection, topology.retry_queue, 1, timeout_s=0.3) == []
        returned = await take(connection, topology.retry_queue, 1, timeout_s=10)
        assert [m.message_id for m in returned] == ["m1"]


async def test_the_broker_dead_letters_past_the_delivery_limit(amqp_url: str) -> None:
    topology = unique_topology()
    topology = dataclasses.replace(topology, delivery_limit=2)
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        await publish(connection, topology.update_queue, b"{}", message_id="poison")
        channel = await connection.channel()
        queue = await channel.get_queue(topology.update_queue)
        for _ in range(3):
            message = await queue.get(fail=False, timeout=5)
            if message is None:
                break
            await message.nack(requeue=True)
        dead = await take(connection, topology.poison_queue, 1, timeout_s=10)
        assert [m.message_id for m in dead] == ["poison"]
        assert isinstance(dead[0], aio_pika.abc.AbstractIncomingMessage)
