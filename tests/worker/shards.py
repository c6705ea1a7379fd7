"""Helpers for tests of sharded topologies: unique names, and everything deleted
afterwards (the shard queues, those past the last one, and the exchange)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from tests.worker.broker import unique_topology
from worker.amqp.topology import Topology


def sharded_topology(shards: int, retry_delays_s: tuple[int, ...] = (1, 2)) -> Topology:
    return dataclasses.replace(unique_topology(retry_delays_s), shards=shards)


@asynccontextmanager
async def sharded(amqp_url: str, topology: Topology) -> AsyncIterator[AbstractRobustConnection]:
    """A connection; the topology's queues, any shard queue up to twice as many,
    the unsharded UPDATE_QUEUE and the exchange are deleted afterwards."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        yield connection
    finally:
        channel = await connection.channel()
        names = set(topology.queues()) | {topology.update_queue}
        names |= {topology.shard_queue(index) for index in range(2 * topology.shards + 1)}
        for name in sorted(names):
            await channel.queue_delete(name)
        await channel.exchange_delete(topology.update_queue)
        await connection.close()


async def drain_shard(
    connection: AbstractRobustConnection, queue: str, *, idle_s: float = 0.5
) -> list[AbstractIncomingMessage]:
    """Every message of a shard queue, in order, acked. A consumer, not basic.get:
    quorum queues with a single active consumer refuse basic.get."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    source = await channel.get_queue(queue)
    got: list[AbstractIncomingMessage] = []
    async with source.iterator() as messages:
        while True:
            try:
                message = await asyncio.wait_for(anext(messages), idle_s)
            except TimeoutError:
                break
            await message.ack()
            got.append(message)
    await channel.close()
    return got
