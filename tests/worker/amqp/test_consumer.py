"""Consumers of shard queues against the real broker: how workers share the shards,
and that pausing, stopping and losing a consumer never let another worker take
an item's later commands ahead of its earlier ones."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractRobustConnection

from schemas.wire import item_routing_key
from tests.worker.broker import depth
from tests.worker.e2e import eventually
from tests.worker.shards import sharded, sharded_topology
from worker.amqp.acks import Acks
from worker.amqp.consumer import Consumers
from worker.amqp.deliveries import Delivery, Source
from worker.amqp.nodes import underlay
from worker.amqp.topology import Topology, claim_lock, declare
from worker.tools.broker import exists

pytestmark = pytest.mark.rabbitmq


@dataclass
class Replica:
    """One worker's consumers, and what they handed on, in order."""

    name: str
    consumers: Consumers
    connection: AbstractRobustConnection
    acking: bool = True
    got: list[tuple[aiormq.abc.AbstractChannel, bytes]] = field(default_factory=list)
    unacked: list[Delivery] = field(default_factory=list)

    async def start(self) -> None:
        await self.consumers.open()
        await self.consumers.start()

    def queues(self) -> set[str]:
        """The queues the deliveries came from."""
        by_channel = {channel: queue for queue, (_, channel) in self.registrations().items()}
        return {by_channel[channel] for channel, _ in self.got}

    def registrations(self) -> dict[str, tuple[str, aiormq.abc.AbstractChannel]]:
        return dict(self.consumers.registrations)

    def bodies(self) -> list[bytes]:
        return [body for _, body in self.got]


@asynccontextmanager
async def replica(
    amqp_url: str,
    topology: Topology,
    name: str,
    *,
    prefetch: int = 40,
    seed: int = 0,
    claim_window_s: float = 0.4,
) -> AsyncIterator[Replica]:
    connection = await aio_pika.connect_robust(amqp_url)

    async def handle(delivery: Delivery, source: Source) -> None:
        me.got.append((delivery.channel, delivery.body))
        if not me.acking:
            me.unacked.append(delivery)
        elif delivery.delivery_tag is not None:
            await delivery.channel.basic_ack(delivery.delivery_tag)

    consumers = Consumers(
        connection=connection,
        topology=topology,
        prefetch=prefetch,
        handle=handle,
        acks=Acks(),
        claim_window_s=claim_window_s,
        rng=random.Random(seed),
    )
    me = Replica(name, consumers, connection)
    try:
        yield me
    finally:
        await connection.close()


async def publish(
    connection: AbstractRobustConnection, topology: Topology, keys: list[str]
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.update_queue)
    for key in keys:
        await exchange.publish(aio_pika.Message(key.encode()), routing_key=key, mandatory=True)
    await channel.close()


KEYS = [item_routing_key(None, 2, n) for n in range(1, 41)]


@pytest.mark.parametrize(
    "seeds",
    [
        pytest.param((1, 2), id="their-own-orders"),
        # Both count the same shard free at the same moment: one takes it, the other
        # claims another in its place. Without the claim lock each took the first
        # shards to be its own, and one of them often ended with none.
        pytest.param((7, 7), id="the-same-order"),
    ],
)
async def test_two_workers_starting_together_take_two_shards_each(
    amqp_url: str, seeds: tuple[int, int]
) -> None:
    topology = sharded_topology(4)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a", seed=seeds[0]) as a,
        replica(amqp_url, topology, "b", seed=seeds[1]) as b,
    ):
        await declare(broker, topology)
        await asyncio.gather(a.start(), b.start())
        await publish(broker, topology, KEYS)
        await eventually(lambda: len(a.got) + len(b.got) == len(KEYS), 10)
        locks = [claim_lock(queue) for queue in topology.work_queues]
        leftover_locks = [lock for lock in locks if await exists(broker, lock, exchange=False)]
    assert len(a.queues()) == len(b.queues()) == 2
    assert not a.queues() & b.queues()
    assert sorted(a.bodies() + b.bodies()) == sorted(key.encode() for key in KEYS)
    assert leftover_locks == []


async def test_a_worker_starting_alone_takes_every_shard_and_keeps_them(amqp_url: str) -> None:
    topology = sharded_topology(4)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a") as a,
        replica(amqp_url, topology, "b") as b,
    ):
        await declare(broker, topology)
        await a.start()
        await b.start()  # in line on every shard
        await publish(broker, topology, KEYS)
        await eventually(lambda: len(a.got) == len(KEYS), 10)
        assert b.got == []
        assert a.queues() == set(topology.work_queues)
        assert set(b.consumers.registrations) == set(a.consumers.registrations)


async def test_retry_copies_are_taken_while_the_shards_are_still_being_claimed(
    amqp_url: str,
) -> None:
    # Four shards claimed one at a time over a 20 s window: the start takes 15 s.
    topology = sharded_topology(4)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a", claim_window_s=20.0) as a,
    ):
        await declare(broker, topology)
        starting = asyncio.create_task(a.start())
        try:
            await eventually(lambda: topology.retry_queue in a.consumers.registrations, 5)
            assert not starting.done()
            assert len(set(topology.work_queues) & set(a.consumers.registrations)) < 4
        finally:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting


async def test_each_shard_consumer_holds_its_share_of_prefetch(amqp_url: str) -> None:
    topology = sharded_topology(4)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a", prefetch=40) as a,
    ):
        await declare(broker, topology)
        a.acking = False
        await a.start()
        await publish(broker, topology, [KEYS[0]] * 30)  # one item: one shard
        await eventually(lambda: len(a.got) == 10, 10)
        # 40 // 4 delivered, 20 ready: a wider window would leave fewer (a passive
        # declare can read 0 on a busy quorum queue, so it is read until it is 20).
        shard = next(q for q, (_, ch) in a.registrations().items() if ch is a.got[0][0])
        for _ in range(100):
            if await depth(broker, shard) == 20:
                break
            await asyncio.sleep(0.05)
        assert await depth(broker, shard) == 20
        assert len(a.got) == 10


async def test_a_paused_worker_keeps_its_shards_and_hands_on_what_came_meanwhile(
    amqp_url: str,
) -> None:
    """A cancel would make the worker in line active while this one still holds
    the item's earlier commands; a pause only holds deliveries back."""
    topology = sharded_topology(2)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a") as a,
        replica(amqp_url, topology, "b") as b,
    ):
        await declare(broker, topology)
        await a.start()
        await b.start()
        await a.consumers.pause()
        sent = [f"{KEYS[0]}#{n}" for n in range(10)]
        channel = await broker.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.update_queue)
        for body in sent:
            await exchange.publish(aio_pika.Message(body.encode()), routing_key=KEYS[0])
        await eventually(lambda: a.consumers.held == len(sent), 10)  # delivered, held back
        assert a.got == b.got == []
        await a.consumers.resume()
        await eventually(lambda: len(a.got) == len(sent), 10)
    assert a.bodies() == [body.encode() for body in sent]
    assert b.got == []


async def test_the_next_worker_takes_a_stopped_workers_shard_from_its_first_unsettled_command(
    amqp_url: str,
) -> None:
    """Stopping holds back new deliveries; when the connection closes, what was
    not settled goes back in its order, and only then does the next worker start."""
    topology = sharded_topology(1)
    sent = [f"{KEYS[0]}#{n}" for n in range(20)]
    async with sharded(amqp_url, topology) as broker:
        await declare(broker, topology)
        async with replica(amqp_url, topology, "b") as b:
            async with replica(amqp_url, topology, "a") as a:
                await a.start()
                await b.start()
                a.acking = False
                await publish(broker, topology, sent[:5])
                await eventually(lambda: len(a.got) == 5, 10)
                for delivery in a.unacked[:2]:  # settled; the next three still held
                    assert delivery.delivery_tag is not None
                    await delivery.channel.basic_ack(delivery.delivery_tag)
                await a.consumers.stop()
                await publish(broker, topology, sent[5:])
                await eventually(lambda: a.consumers.held == len(sent) - 5, 10)
                assert len(a.got) == 5
                assert b.got == []  # the shard stays with the stopping worker
            await eventually(lambda: len(b.got) == len(sent) - 2, 10)
    assert b.bodies() == [body.encode() for body in sent[2:]]


async def test_a_shard_consumer_cancelled_by_the_server_is_registered_again(
    amqp_url: str,
) -> None:
    topology = sharded_topology(2)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a") as a,
    ):
        await declare(broker, topology)
        await a.start()
        watcher = asyncio.create_task(a.consumers.watch_cancellations(interval_s=0.1))
        try:
            shard = topology.shard_queue(1)
            tag, channel = a.consumers.registrations[shard]
            await channel.basic_cancel(tag)  # as the broker's basic.cancel would leave it
            await eventually(lambda: a.consumers.registrations[shard][0] != tag, 10)
            assert len(channel.consumers) == 1  # type: ignore[attr-defined]  # exactly once
            await publish(broker, topology, KEYS)
            await eventually(lambda: len(a.got) == len(KEYS), 10)
        finally:
            watcher.cancel()
    assert a.queues() == set(topology.work_queues)


async def test_a_queue_named_update_queue_from_before_shards_is_drained_too(
    amqp_url: str,
) -> None:
    topology = sharded_topology(2)
    async with sharded(amqp_url, topology) as broker:
        channel = await broker.channel()
        arguments = {"x-queue-type": "quorum"}
        await channel.declare_queue(topology.update_queue, durable=True, arguments=arguments)
        await declare(broker, topology)
        await channel.default_exchange.publish(
            aio_pika.Message(b"from before"), routing_key=topology.update_queue
        )
        async with replica(amqp_url, topology, "a") as a:
            await a.start()
            await eventually(lambda: a.bodies() == [b"from before"], 10)
            assert a.queues() == {topology.update_queue}
            watcher = asyncio.create_task(a.consumers.watch_cancellations(interval_s=0.1))
            try:
                await channel.queue_delete(topology.update_queue)
                await eventually(lambda: topology.update_queue not in a.consumers.registrations, 10)
            finally:
                watcher.cancel()


async def test_shard_channels_the_broker_closed_are_consumed_again_when_reopened(
    amqp_url: str,
) -> None:
    topology = sharded_topology(2)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a") as a,
    ):
        await declare(broker, topology)
        await a.start()
        watcher = asyncio.create_task(a.consumers.watch_cancellations(interval_s=0.1))
        try:
            before = a.registrations()
            for queue in topology.work_queues:
                _, channel = before[queue]
                await channel.basic_ack(999_999)  # an unknown tag: the broker closes the channel
            await eventually(
                lambda: all(
                    a.registrations()[queue][1] is not before[queue][1]
                    for queue in topology.work_queues
                ),
                15,
            )
            await publish(broker, topology, KEYS)
            await eventually(lambda: len(a.got) == len(KEYS), 10)
        finally:
            watcher.cancel()
    assert a.queues() == set(topology.work_queues)


async def test_a_claim_that_finds_each_lock_held_waits_in_line_and_leaves_no_channel_open(
    amqp_url: str,
) -> None:
    # The broker closes the channel of a lock it refuses; a robust channel opened itself
    # again and stayed open for the connection's life: one channel more per lost claim.
    topology = sharded_topology(4)
    async with (
        sharded(amqp_url, topology) as broker,
        replica(amqp_url, topology, "a") as a,
    ):
        await declare(broker, topology)
        holder = await broker.channel()
        for queue in topology.work_queues:
            await holder.declare_queue(claim_lock(queue), exclusive=True)
        await a.start()
        await asyncio.sleep(0.5)  # what a robust channel takes to open itself again
        transport = await underlay(a.connection)
        consuming = {channel.number for _, channel in a.registrations().values()}
        open_channels = set(transport.channels)
        await holder.close()
    assert set(a.registrations()) >= set(topology.work_queues)  # in line on every shard
    assert open_channels == consuming
