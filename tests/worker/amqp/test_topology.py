"""Declaring the queues (and with SHARDS the exchange) against the real broker."""

from __future__ import annotations

import asyncio
import dataclasses

import aio_pika
import pytest

import worker.amqp.topology
from schemas.wire import item_routing_key
from tests.worker.broker import connected, publish, take, unique_topology
from tests.worker.shards import drain_shard, sharded, sharded_topology
from worker.amqp.backlog import ready_counts
from worker.amqp.nodes import underlay
from worker.amqp.topology import TopologyError, declare, declare_portal

pytestmark = pytest.mark.rabbitmq


async def test_declaring_twice_is_harmless(amqp_url: str) -> None:
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        await declare(connection, topology)
        channel = await connection.channel()
        for name in topology.queues():
            await channel.get_queue(name, ensure=True)  # raises when missing


async def test_look_ups_that_find_nothing_leave_no_channel_open(amqp_url: str) -> None:
    """The broker closes a channel whose passive declare finds nothing: at every start
    (no leftover shard queue, no portal exchange) and at every backlog reading of a
    deleted queue. A worker that runs for months must not keep a channel of each."""
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        transport = await underlay(connection)
        open_before = set(transport.channels)
        missing = [f"{topology.update_queue}.missing{n}" for n in range(3)]
        for _ in range(3):
            await declare(connection, topology)
            assert await ready_counts(connection, missing) == {}
        await asyncio.sleep(1)  # a channel that opens itself again has done so by now
        assert set(transport.channels) == open_before


async def test_a_portal_queue_refused_again_and_again_leaves_no_channel_open(
    amqp_url: str,
) -> None:
    """A portal registered at run time whose queue the broker refuses (one of that name
    with other arguments) is declared again at every look at the registry: each
    refusal closes its channel, and none may stay open."""
    topology = dataclasses.replace(unique_topology(), portals=("acme",))
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        transport = await underlay(connection)
        open_before = set(transport.channels)
        channel = await connection.channel()
        await channel.queue_delete(topology.portal_queue("fresh"))
        await channel.declare_queue(topology.portal_queue("fresh"), durable=True)  # classic
        await channel.close()
        for _ in range(3):
            with pytest.raises(TopologyError, match=topology.portal_queue("fresh")):
                await declare_portal(connection, topology, "fresh")
        await asyncio.sleep(1)  # a channel that opens itself again has done so by now
        open_after = set(transport.channels)
        cleanup = await connection.channel()
        await cleanup.queue_delete(topology.portal_queue("fresh"))
        await cleanup.close()
    assert open_after == open_before


async def test_declare_reports_each_queues_ready_messages(amqp_url: str) -> None:
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        assert (await declare(connection, topology))[topology.update_queue] == 0
        for n in range(3):
            await publish(connection, topology.update_queue, {"n": n})
        ready = await declare(connection, topology)
    assert ready[topology.update_queue] == 3
    assert set(ready) == set(topology.queues())


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


def test_an_items_routing_key_names_its_type_and_id_and_the_portal_when_given() -> None:
    assert item_routing_key(None, 2, 351) == "2:351"
    assert item_routing_key("acme", 2, 351) == "acme:2:351"
    assert item_routing_key("acme", 2, 351) != item_routing_key("other", 2, 351)


def test_without_shards_the_work_queue_is_update_queue_and_there_is_no_exchange() -> None:
    topology = unique_topology()
    assert topology.work_queues == (topology.update_queue,)
    assert topology.entry_exchange is None
    assert "x-single-active-consumer" not in topology.queues()[topology.update_queue]


async def test_shards_are_single_active_consumer_queues_that_dead_letter_to_poison(
    amqp_url: str,
) -> None:
    topology = sharded_topology(4)
    async with sharded(amqp_url, topology) as connection:
        await declare(connection, topology)
        await declare(connection, topology)  # twice: nothing changes
        queues = topology.queues()
        assert topology.update_queue not in queues
        assert topology.work_queues == tuple(f"{topology.update_queue}.shard.{i}" for i in range(4))
        for name in topology.work_queues:
            assert queues[name] == {
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": topology.delivery_limit,
                "x-dead-letter-routing-key": topology.poison_queue,
                "x-single-active-consumer": True,
            }
            # The broker holds those arguments: declaring without one is refused.
            channel = await connection.channel()
            without = {k: v for k, v in queues[name].items() if k != "x-single-active-consumer"}
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await channel.declare_queue(name, durable=True, arguments=without)
        for name in (topology.poison_queue, topology.retry_queue, topology.tier_queue(1)):
            assert name in queues


async def test_one_routing_key_always_lands_in_the_same_shard(amqp_url: str) -> None:
    topology = sharded_topology(4)
    keys = [item_routing_key("acme" if n % 2 else None, 2, n) for n in range(1, 41)]
    async with sharded(amqp_url, topology) as connection:
        await declare(connection, topology)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.update_queue)
        for turn in range(3):
            for key in keys:
                await exchange.publish(
                    aio_pika.Message(f"{key}#{turn}".encode()), routing_key=key, mandatory=True
                )
        shards_of: dict[str, set[str]] = {key: set() for key in keys}
        rounds_of: dict[str, list[str]] = {key: [] for key in keys}
        for name in topology.work_queues:
            for message in await drain_shard(connection, name):
                key, _, sent = message.body.decode().partition("#")
                shards_of[key].add(name)
                rounds_of[key].append(sent)
    assert all(len(found) == 1 for found in shards_of.values()), shards_of
    assert all(rounds == ["0", "1", "2"] for rounds in rounds_of.values())  # in publish order
    used = set().union(*shards_of.values())
    assert len(used) == 4  # forty items spread over every shard


async def test_a_broker_without_the_hash_exchange_type_says_how_to_enable_it(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Provoked with an exchange type no broker has: the broker answers exactly as it
    does for x-consistent-hash without the plugin (and closes the connection)."""
    topology = sharded_topology(4)
    monkeypatch.setattr(worker.amqp.topology, "HASH_EXCHANGE_TYPE", "x-no-such-type")
    async with sharded(amqp_url, topology):
        connection = await aio_pika.connect(amqp_url)
        try:
            with pytest.raises(TopologyError) as raised:
                await declare(connection, topology)
        finally:
            await connection.close()
    assert str(raised.value) == (
        "the broker has no x-no-such-type exchange type, which SHARDS=4 needs: enable the "
        "rabbitmq_consistent_hash_exchange plugin on every broker node with "
        "`rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` (no restart needed), "
        "or set SHARDS=0"
    )


async def test_an_exchange_of_another_type_is_named(amqp_url: str) -> None:
    topology = sharded_topology(2)
    async with sharded(amqp_url, topology) as connection:
        channel = await connection.channel()
        await channel.declare_exchange(topology.update_queue, type="direct", durable=True)
        with pytest.raises(TopologyError, match=f"exchange '{topology.update_queue}' already"):
            await declare(connection, topology)


async def test_shard_queues_left_from_a_larger_shards_are_refused(amqp_url: str) -> None:
    """They stay bound to the exchange: commands routed there would reach no worker."""
    topology = sharded_topology(4)
    async with sharded(amqp_url, topology) as connection:
        await declare(connection, topology)
        for fewer in (2, 0):
            with pytest.raises(TopologyError, match=rf"\.shard\.{fewer}' exists"):
                await declare(connection, dataclasses.replace(topology, shards=fewer))
