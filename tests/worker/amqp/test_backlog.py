"""The queues' backlog: each queue's ready messages (and its consumers, which a
claim reads) read over a few channels side by side, and the periodic reading,
where a reading made by someone else meanwhile stands for the next turn, and
the turns come back once it stops."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from worker.amqp.backlog import consumer_counts, read_every, ready_counts


@pytest.mark.rabbitmq
async def test_each_queue_is_read_in_the_order_given_and_a_missing_one_left_out(
    amqp_url: str,
) -> None:
    prefix = f"test.{uuid.uuid4().hex[:10]}"
    names = [f"{prefix}.q{n}" for n in range(130)]  # over two channels
    missing = [f"{prefix}.missing{n}" for n in range(2)]
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for n, name in enumerate(names):
            await channel.declare_queue(name, auto_delete=False)
            for _ in range(n % 3):
                await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
        asked = [*names[:65], missing[0], *names[65:], missing[1]]
        counts = await ready_counts(connection, asked)
        assert list(counts) == names
        assert counts == {name: n % 3 for n, name in enumerate(names)}
    finally:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await connection.close()


@pytest.mark.rabbitmq
async def test_each_queues_consumers_are_read_in_the_order_given(amqp_url: str) -> None:
    prefix = f"test.{uuid.uuid4().hex[:10]}"
    names = [f"{prefix}.q{n}" for n in range(120)]  # over two channels
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.declare_queue(name, auto_delete=False)
        consumed = names[7::10]
        consumer = await connection.channel()

        async def ignore(message: AbstractIncomingMessage) -> None:
            pass  # held unacked: the count is of consumers, not of what they took

        for name in consumed:
            await (await consumer.get_queue(name)).consume(ignore)
        asked = [*reversed(names), f"{prefix}.missing"]
        counts = await consumer_counts(connection, asked)
        assert list(counts) == list(reversed(names))
        assert counts == {name: int(name in consumed) for name in names}
    finally:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await connection.close()


async def test_a_fresher_reading_made_elsewhere_skips_the_turns_until_it_stops() -> None:
    read_at = time.monotonic()
    turns = 0

    async def read() -> None:
        nonlocal read_at, turns
        turns += 1
        read_at = time.monotonic()

    async def read_elsewhere(for_s: float) -> None:
        nonlocal read_at
        until = time.monotonic() + for_s
        while time.monotonic() < until:
            read_at = time.monotonic()
            await asyncio.sleep(0.05)

    reading = asyncio.create_task(read_every(read, lambda: read_at, 1.0))
    try:
        await read_elsewhere(3.5)  # without the skip: the first turn and three more
        assert turns == 1
        await asyncio.sleep(2.5)  # a turn a second again, the first 1 s after the last reading
        assert turns >= 2
    finally:
        reading.cancel()
