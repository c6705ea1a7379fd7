"""The portal queues consumed over connections of their own (PORTAL_CONNECTIONS),
against the real broker: spread over at most that many, the main connection
kept for the rest and for portal queues of one batch, what they held given
back when they close, and a portal queue given back while the broker was lost
consumed again."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from yarl import URL

from tests.worker.broker import connected, depth, unique_topology
from tests.worker.e2e import eventually
from worker.amqp.acks import Acks
from worker.amqp.consumer import Consumers
from worker.amqp.deliveries import Delivery, Source
from worker.amqp.topology import Topology, declare
from worker.runtime.readiness import Readiness

pytestmark = pytest.mark.rabbitmq

PORTALS = ("north", "south", "east")


@dataclass
class Run:
    main: AbstractRobustConnection
    consumers: Consumers
    made: list[AbstractConnection] = field(default_factory=list)
    got: dict[str, list[Delivery]] = field(default_factory=dict)

    def connection_of(self, queue: str) -> aiormq.abc.AbstractConnection:
        """The (underlying) connection the queue's consumer was registered over."""
        _, channel = self.consumers.registrations[queue]
        return channel.connection


def underlying(connection: AbstractConnection) -> aiormq.abc.AbstractConnection:
    transport = connection.transport
    assert transport is not None
    return transport.connection


@asynccontextmanager
async def consuming(
    amqp_url: str, topology: Topology, *, spread: int, batch: int = 1
) -> AsyncIterator[Run]:
    made: list[AbstractConnection] = []

    async def connect() -> AbstractConnection:
        made.append(await aio_pika.connect_robust(amqp_url))
        return made[-1]

    async def handle(delivery: Delivery, source: Source) -> None:
        run.got.setdefault(delivery.body.decode(), []).append(delivery)  # never acked

    async with connected(amqp_url, topology) as main:
        await declare(main, topology)
        consumers = Consumers(
            connection=main,
            topology=topology,
            prefetch=10,
            handle=handle,
            acks=Acks(),
            portal_prefetch=dict.fromkeys(topology.portals, 10),
            connect=connect,
            spread=spread,
            batch=batch,
        )
        run = Run(main, consumers, made)
        try:
            await consumers.open()
            await consumers.start()
            yield run
        finally:
            await consumers.close_connections()


async def send(main: AbstractRobustConnection, topology: Topology, portal: str) -> None:
    channel = await main.channel(publisher_confirms=True)
    queue = topology.portal_queue(portal)
    await channel.default_exchange.publish(aio_pika.Message(portal.encode()), routing_key=queue)
    await channel.close()


def portal_topology() -> Topology:
    return dataclasses.replace(unique_topology(), portals=PORTALS)


async def test_portal_queues_are_spread_over_connections_of_their_own(amqp_url: str) -> None:
    topology = portal_topology()
    async with consuming(amqp_url, topology, spread=2) as run:
        for portal in PORTALS:
            await send(run.main, topology, portal)
        await eventually(lambda: len(run.got) == len(PORTALS))
        used = [run.connection_of(topology.portal_queue(portal)) for portal in PORTALS]
        main = underlying(run.main)
        # Two connections made, none of the portal queues on the main one, both used.
        assert len(run.made) == 2
        assert main not in used
        assert set(used) == {underlying(made) for made in run.made}
        # The other queues stay on the main connection.
        assert run.connection_of(topology.retry_queue) is main
        assert run.connection_of(topology.poison_queue) is main


async def test_no_more_connections_than_portal_queues_to_spread(amqp_url: str) -> None:
    topology = portal_topology()
    async with consuming(amqp_url, topology, spread=16) as run:
        used = {run.connection_of(topology.portal_queue(portal)) for portal in PORTALS}
        assert len(run.made) == len(PORTALS)
        assert used == {underlying(made) for made in run.made}


async def test_without_a_spread_every_queue_is_consumed_over_the_main_connection(
    amqp_url: str,
) -> None:
    topology = portal_topology()
    async with consuming(amqp_url, topology, spread=0) as run:
        main = underlying(run.main)
        assert run.made == []
        assert {run.connection_of(queue) for queue in run.consumers.registrations} == {main}


async def test_a_portal_held_and_released_comes_back_within_the_spread(amqp_url: str) -> None:
    topology = portal_topology()
    async with consuming(amqp_url, topology, spread=2) as run:
        for _ in range(3):
            await run.consumers.hold("north")
            await run.consumers.release("north")
        await send(run.main, topology, "north")
        await eventually(lambda: "north" in run.got)
        assert len(run.made) == 2
        assert run.connection_of(topology.portal_queue("north")) in {
            underlying(made) for made in run.made
        }


async def test_closing_the_portal_connections_gives_back_what_they_held(amqp_url: str) -> None:
    topology = portal_topology()
    async with consuming(amqp_url, topology, spread=2) as run:
        for portal in PORTALS:
            for _ in range(3):
                await send(run.main, topology, portal)
        await eventually(lambda: sum(map(len, run.got.values())) == 3 * len(PORTALS))
        await run.consumers.stop()
        await run.consumers.close_connections()
        # A busy quorum queue may report 0 for a moment: read until it tells.
        for portal in PORTALS:
            queue = topology.portal_queue(portal)
            for _ in range(100):
                if await depth(run.main, queue) == 3:
                    break
            assert await depth(run.main, queue) == 3


async def test_the_worker_is_not_ready_while_a_portal_connection_is_down(amqp_url: str) -> None:
    topology = portal_topology()
    async with consuming(amqp_url, topology, spread=2) as run:
        readiness = Readiness({})
        readiness.connection = run.main
        readiness.consumers = run.consumers
        assert readiness.reason() is None
        await run.made[0].close()
        assert readiness.reason() == "a connection of the portal queues is down"


async def test_a_portal_queue_of_one_batch_stays_on_the_main_connection(amqp_url: str) -> None:
    topology = portal_topology()
    async with consuming(amqp_url, topology, spread=2, batch=10) as run:
        main = underlying(run.main)
        # A prefetch of 10 is one call of 10: nothing to spread.
        assert run.made == []
        assert {run.connection_of(queue) for queue in run.consumers.registrations} == {main}


async def test_a_portal_queue_released_while_the_broker_is_lost_is_consumed_again(
    amqp_url: str,
) -> None:
    # A hold (a portal down, a hand-over) gave the queue back; the connection is
    # lost just before the release registers its consumer again.
    topology = portal_topology()
    quick = str(URL(amqp_url).update_query(reconnect_interval=0.2))
    async with consuming(quick, topology, spread=0) as run:
        watcher = asyncio.create_task(run.consumers.watch_cancellations(interval_s=0.1))
        try:
            queue = topology.portal_queue("north")
            await run.consumers.hold("north")
            assert queue not in run.consumers.registrations
            await underlying(run.main).close()
            await run.consumers.release("north")  # fails inside: no consumer yet
            assert queue not in run.consumers.registrations
            await eventually(lambda: queue in run.consumers.registrations)
            await send(run.main, topology, "north")
            await eventually(lambda: "north" in run.got)
            assert len(run.got["north"]) == 1
        finally:
            watcher.cancel()
