"""Helpers for tests against the real broker: unique queue names, reading queues."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from worker.amqp.topology import Topology


def unique_topology(retry_delays_s: tuple[int, ...] = (1, 2)) -> Topology:
    prefix = f"test.{uuid.uuid4().hex[:10]}"
    return Topology(
        update_queue=f"{prefix}.update",
        result_queue=f"{prefix}.result",
        dead_letter_queue=f"{prefix}.dead",
        retry_delays_s=retry_delays_s,
    )


@asynccontextmanager
async def connected(amqp_url: str, topology: Topology) -> AsyncIterator[AbstractRobustConnection]:
    """A connection; every queue of the topology (and its exchanges, with portal
    queues) is deleted afterwards."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        yield connection
    finally:
        channel = await connection.channel()
        for name in topology.queues():
            await channel.queue_delete(name)
        if topology.portal_queues:
            await channel.exchange_delete(topology.update_queue)
            await channel.exchange_delete(topology.unrouted_exchange)
        await connection.close()


async def publish(
    connection: AbstractRobustConnection,
    queue: str,
    body: bytes | dict[str, Any],
    **properties: Any,
) -> None:
    channel = await connection.channel()
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    properties.setdefault("content_type", "application/json")
    await channel.default_exchange.publish(
        aio_pika.Message(raw, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),
        routing_key=queue,
    )
    await channel.close()


async def publish_all(
    connection: AbstractRobustConnection,
    queue: str,
    commands: Iterable[tuple[str, dict[str, Any]]],
) -> None:
    """Publish (message id, command) pairs in order on one channel, each confirmed."""
    channel = await connection.channel(publisher_confirms=True)
    for message_id, command in commands:
        await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(command).encode(),
                content_type="application/json",
                message_id=message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )
    await channel.close()


async def take(
    connection: AbstractRobustConnection, queue: str, count: int, *, timeout_s: float = 30.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Get `count` messages from a queue (acking them), waiting up to `timeout_s`."""
    channel = await connection.channel()
    source = await channel.get_queue(queue)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < count and loop.time() < deadline:
        message = await source.get(fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        await message.ack()
        got.append(message)
    await channel.close()
    return got


async def depth(connection: AbstractRobustConnection, queue: str) -> int:
    """The ready messages as a passive declare reports them. A busy quorum queue may
    report 0 whatever it holds: wait on this only for "at least N"; to show that
    nothing is left, `drain` the queue."""
    channel = await connection.channel()
    declared = await channel.get_queue(queue)
    result = await declared.declare()
    await channel.close()
    return int(result.message_count or 0)


async def drain(
    connection: AbstractRobustConnection, queue: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now ready on a queue nobody consumes, taken one by one with
    basic.get and acked: an exact count, where a passive declare's is not. (A queue
    with a single active consumer refuses basic.get: see tests/worker/shards.py.)"""
    channel = await connection.channel()
    source = await channel.get_queue(queue)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    while (message := await source.get(fail=False)) is not None:
        await message.ack()
        got.append(message)
    await channel.close()
    return got
