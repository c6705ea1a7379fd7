"""What RabbitMQ does with what a worker gives back, on the worker's own queues, and
how the consumers keep an item's order through it.

A quorum queue with a delivery limit (every work queue of the worker) keeps what
comes back ahead of everything else, in the order it came back: a nack returns a
delivery at once; a channel that closes returns what it held unacked, in the order
it was delivered. So a command given back before an earlier one of its item is
delivered before it next time; the flow never does that (tests/worker/flow/
test_order_on_stop.py), and these tests pin the broker's side of it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from tests.worker.broker import connected, unique_topology
from tests.worker.shards import sharded, sharded_topology
from worker.amqp.acks import Acks
from worker.amqp.consumer import Consumers
from worker.amqp.deliveries import Delivery, Source
from worker.amqp.topology import declare

pytestmark = pytest.mark.rabbitmq


async def _publish(connection: AbstractRobustConnection, queue: str, *bodies: str) -> None:
    channel = await connection.channel(publisher_confirms=True)
    for body in bodies:
        await channel.default_exchange.publish(aio_pika.Message(body.encode()), routing_key=queue)
    await channel.close()


async def _order_after(
    connection: AbstractRobustConnection,
    queue: str,
    give_back: Callable[[dict[str, AbstractIncomingMessage]], object],
) -> list[str]:
    """Deliver m1..m4 of m1..m6 to a consumer, give some back, and read the queue again."""
    await _publish(connection, queue, *(f"m{n}" for n in range(1, 7)))
    first = await connection.channel()
    await first.set_qos(prefetch_count=4)
    held: dict[str, AbstractIncomingMessage] = {}
    arrived = asyncio.Event()

    async def hold(message: AbstractIncomingMessage) -> None:
        held[message.body.decode()] = message
        if len(held) == 4:
            arrived.set()

    source = await first.get_queue(queue)
    tag = await source.consume(hold)
    await asyncio.wait_for(arrived.wait(), 10)
    await source.cancel(tag)
    await give_back(held)  # type: ignore[misc]
    await first.close()
    second = await connection.channel()
    order: list[str] = []
    async with (await second.get_queue(queue)).iterator() as messages:
        async for message in messages:
            order.append(message.body.decode())
            await message.ack()
            if len(order) == 6:
                break
    await second.close()
    return order


async def test_a_closing_channel_gives_back_what_it_held_in_delivery_order(amqp_url: str) -> None:
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)

        async def nothing(held: dict[str, AbstractIncomingMessage]) -> None:
            pass

        order = await _order_after(connection, topology.update_queue, nothing)
    assert order == ["m1", "m2", "m3", "m4", "m5", "m6"]


async def test_what_is_nacked_comes_back_first_in_the_order_it_was_nacked(amqp_url: str) -> None:
    """m3, then m1 nacked; m2 and m4 returned by the close: m3, m1, m2, m4, then the rest.
    Had m3 been a later command of m1's item, it would now be applied before m1."""
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)

        async def nack_m3_then_m1(held: dict[str, AbstractIncomingMessage]) -> None:
            await held["m3"].nack(requeue=True)
            await held["m1"].nack(requeue=True)

        order = await _order_after(connection, topology.update_queue, nack_m3_then_m1)
    assert order == ["m3", "m1", "m2", "m4", "m5", "m6"]


async def test_a_paused_shard_hands_on_what_was_given_back_before_what_came_meanwhile(
    amqp_url: str,
) -> None:
    """t0 reaches the pipeline; its portal goes down and consuming pauses; t1 arrives and
    is held; t0 is handed back and comes straight back to the paused consumer, behind
    t1. On resume, t0 is handed on first."""
    topology = sharded_topology(1)
    async with sharded(amqp_url, topology) as connection:
        await declare(connection, topology)
        worker = await aio_pika.connect_robust(amqp_url)
        acks = Acks()
        got: list[str] = []
        first: list[Delivery] = []

        async def handle(delivery: Delivery, source: Source) -> None:
            got.append(delivery.body.decode())
            if not first:
                first.append(delivery)
                await consumers.hold("acme")  # what arrives now is held back
            elif delivery.delivery_tag is not None:
                acks.ack(delivery.channel, delivery.delivery_tag, "m")

        consumers = Consumers(
            connection=worker,
            topology=topology,
            prefetch=2,
            handle=handle,
            acks=acks,
            claim_window_s=0.1,
            rng=random.Random(0),
        )
        try:
            await consumers.open()
            await consumers.start()
            await _publish(connection, topology.shard_queue(0), "t0", "t1")
            for _ in range(200):
                if consumers.held == 1:
                    break
                await asyncio.sleep(0.01)
            assert consumers.held == 1  # t1
            await acks.hand_back(first[0])
            for _ in range(200):
                if consumers.held == 2:
                    break
                await asyncio.sleep(0.01)
            assert consumers.held == 2  # t1, then t0 again
            await consumers.release("acme")
            for _ in range(200):
                if len(got) == 3:
                    break
                await asyncio.sleep(0.01)
            assert got == ["t0", "t0", "t1"]
            await acks.flush()
        finally:
            await worker.close()


async def test_a_busy_consumer_closed_without_a_cancel_gives_back_in_delivery_order(
    amqp_url: str,
) -> None:
    """Deliveries keep arriving while runs of them are acked and some are held, as in a
    worker; the consumer is not cancelled, its channel just closes. Everything comes
    back in order: what it held first, then the rest of the queue. (Cancelled first,
    RabbitMQ 3.10 gave back the deliveries in flight at the cancel ahead of older
    held ones: why the consumers never cancel to pause or stop.)"""
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        await _publish(connection, topology.update_queue, *(str(n) for n in range(1, 401)))
        worker = await connection.channel()
        await worker.set_qos(prefetch_count=100)
        held: list[AbstractIncomingMessage] = []
        stopped = False

        async def on(message: AbstractIncomingMessage) -> None:
            if not stopped:
                held.append(message)

        await (await worker.get_queue(topology.update_queue)).consume(on)
        rng = random.Random(3)
        acked = 0
        while acked < 100:
            await asyncio.sleep(0.005)
            for message in [m for m in held[:25] if rng.random() < 0.8][: min(20, 100 - acked)]:
                held.remove(message)
                await message.ack()
                acked += 1
        stopped = True
        kept = sorted(int(message.body) for message in held)
        await worker.close()
        reader = await connection.channel()
        order: list[int] = []
        async with (
            asyncio.timeout(30),
            (await reader.get_queue(topology.update_queue)).iterator() as messages,
        ):
            async for message in messages:
                order.append(int(message.body))
                await message.ack()
                if len(order) == 300:
                    break
        await reader.close()
    assert order == sorted(order)
    assert order[: len(kept)] == kept
