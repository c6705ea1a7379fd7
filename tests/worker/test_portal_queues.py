"""A queue per portal: each portal's commands wait on the broker in a queue of
their own, a portal that is down holds back only itself, and a slow portal
holds only its own connections.

Two sandbox portals: `north` (the portal of B24_WEBHOOK_URL, the default) and
`south` (in B24_PORTALS), so the worker runs with portal queues.
"""

from __future__ import annotations

import dataclasses
import io
import json

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from sandbox.testing import RunningSandbox
from schemas.wire import PORTAL_HEADER
from tests.worker.broker import connected, depth, drain, take, unique_topology
from tests.worker.conftest import TWO_PORTALS_SEED
from tests.worker.e2e import control, events, eventually, running_worker, settings_for, stored
from tests.worker.shards import drain_shard
from tests.worker.tools.helpers import tool_env
from worker.amqp.topology import Topology, TopologyError, declare
from worker.settings import Settings
from worker.tools.check import run_checks

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

ITEMS = TWO_PORTALS_SEED  # the deals each of the `north` and `south` sandboxes holds


def two_portals(amqp_url: str, north: RunningSandbox, south: RunningSandbox) -> Settings:
    return settings_for(
        amqp_url,
        north,
        B24_PORTAL_KEY="north",
        B24_DEFAULT_PORTAL="north",
        B24_PORTALS={"south": {"webhook_url": south.webhook_url}},
    )


async def send(
    broker: AbstractRobustConnection,
    topology: Topology,
    portal: str | None,
    item_id: int,
    title: str,
) -> None:
    """As producers do with portal queues: to the exchange UPDATE_QUEUE, confirmed."""
    channel = await broker.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(topology.update_queue)
    body = {"entityTypeId": 2, "id": item_id, "fields": {"title": title}}
    await exchange.publish(
        aio_pika.Message(
            json.dumps(body).encode(),
            content_type="application/json",
            message_id=f"{portal}-{item_id}-{title}",
            headers={PORTAL_HEADER: portal} if portal else {},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=f"2:{item_id}",
    )
    await channel.close()


async def test_the_exchange_sends_each_command_to_its_portals_queue_only(amqp_url: str) -> None:
    topology = dataclasses.replace(unique_topology(), portals=("north", "south"))
    async with connected(amqp_url, topology) as broker:
        await declare(broker, topology)
        await send(broker, topology, "north", 1, "n")
        await send(broker, topology, "south", 2, "s")
        await send(broker, topology, None, 3, "no header")
        await send(broker, topology, "west", 4, "unknown portal")
        north = await drain_shard(broker, topology.portal_queue("north"))
        south = await drain_shard(broker, topology.portal_queue("south"))
        shared = await drain(broker, topology.update_queue)
    assert [json.loads(m.body)["id"] for m in north] == [1]
    assert [json.loads(m.body)["id"] for m in south] == [2]
    assert [json.loads(m.body)["id"] for m in shared] == [3, 4]


async def test_a_blocked_portal_waits_on_the_broker_while_another_goes_on(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    control(south, "PATCH", "faults", {"overload": True})
    settings = two_portals(amqp_url, north, south)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        topology = worker.topology
        for n in (1, 2):
            for item_id in range(1, ITEMS + 1):
                await send(broker, topology, "south", item_id, f"south v{n}")
                await send(broker, topology, "north", item_id, f"north v{n}")
        north_done = events(await take(broker, settings.RESULT_QUEUE, 2 * ITEMS))
        south_lane = worker.lanes["south"].pipeline
        await eventually(lambda: south_lane.down == "blocked")
        # Given back to its queue: nothing of it is held in the worker.
        queue = topology.portal_queue("south")
        await eventually(lambda: south_lane.held == 0 and south_lane.calls_out == 0)
        for _ in range(100):
            if await depth(broker, queue) == 2 * ITEMS:
                break
        assert await depth(broker, queue) == 2 * ITEMS
        assert worker.not_ready() is None  # the worker is ready: its other portal goes on
        assert await drain(broker, settings.DEAD_LETTER_QUEUE) == []
        control(south, "PATCH", "faults", {"overload": False})
        south_done = events(await take(broker, settings.RESULT_QUEUE, 2 * ITEMS, timeout_s=60))
        dead = await drain(broker, settings.DEAD_LETTER_QUEUE)
    assert dead == []
    # Each event names its portal: item 1 of north and item 1 of south are told apart.
    assert {(e["messageId"].split("-")[0], e["portal"]) for e in north_done} == {("north", "north")}
    assert {(e["messageId"].split("-")[0], e["portal"]) for e in south_done} == {("south", "south")}
    for item_id in range(1, ITEMS + 1):
        # Each item's second command applied after its first, on both portals.
        assert stored(north, 2, item_id)["title"] == "north v2"
        assert stored(south, 2, item_id)["title"] == "south v2"


async def test_a_slow_portal_holds_only_its_own_connections(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    settings = two_portals(amqp_url, north, south)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        topology = worker.topology
        # Warm both portals up (field definitions), then slow south down: each of
        # its calls takes 8 s, and it has as many out as its lane allows.
        await send(broker, topology, "south", 1, "warm")
        await send(broker, topology, "north", 1, "warm")
        await take(broker, settings.RESULT_QUEUE, 2)
        control(south, "PATCH", "faults", {"latency_ms": 8000})
        south_lane = worker.lanes["south"]
        for item_id in range(2, ITEMS + 1):
            await send(broker, topology, "south", item_id, "slow")
        await eventually(lambda: south_lane.pipeline.calls_out > 0)
        for item_id in range(2, ITEMS + 1):
            await send(broker, topology, "north", item_id, "fast")
        north_done = events(await take(broker, settings.RESULT_QUEUE, ITEMS - 1, timeout_s=6))
        # North's commands all ended while south's calls were still out.
        still_out = south_lane.pipeline.calls_out
        control(south, "PATCH", "faults", {"latency_ms": 0})
        await take(broker, settings.RESULT_QUEUE, ITEMS - 1, timeout_s=60)
    assert sorted(e["id"] for e in north_done) == list(range(2, ITEMS + 1))
    assert {e["messageId"].split("-")[0] for e in north_done} == {"north"}
    assert still_out > 0
    assert worker.lanes["north"].http is not south_lane.http


async def test_a_lane_is_built_at_its_first_command_and_dropped_once_idle(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    # The portal forgets its calls within 1 s (its window; its bucket drains in
    # 2 / 10 s): an idle lane may go after 1 s.
    limits = {"B24_OPERATING_WINDOW_S": 1.0, "B24_RATE_BURST": 2, "B24_RATE_PER_SECOND": 10}
    settings = two_portals(amqp_url, north, south).model_copy(update={"LANE_IDLE_S": 1.0, **limits})
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        topology = worker.topology
        assert worker.lanes.built == {}  # two portals served, no lane yet
        await send(broker, topology, "south", 1, "first")
        [first] = events(await take(broker, settings.RESULT_QUEUE, 1))
        assert list(worker.lanes.built) == ["south"]  # north has had no command
        lane = worker.lanes.built["south"]
        assert worker.metrics.total("b24_succeeded_total", portal="south") == 1
        await eventually(lambda: "south" not in worker.lanes.built, 10)
        assert lane.http.is_closed
        assert worker.metrics.total("b24_succeeded_total", portal="south") == 0  # its series
        status = await worker.status()
        assert {row.key: row.state for row in status.portals} == {"north": "idle", "south": "idle"}
        # Its next command builds it again, and goes through.
        await send(broker, topology, "south", 1, "second")
        [second] = events(await take(broker, settings.RESULT_QUEUE, 1))
        assert worker.lanes.built["south"] is not lane
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    assert stored(south, 2, 1)["title"] == "second"


async def test_workers_without_portal_queues_refuse_those_left_by_workers_with_them(
    amqp_url: str,
) -> None:
    with_portals = dataclasses.replace(unique_topology(), portals=("north", "south"))
    async with connected(amqp_url, with_portals) as broker:
        await declare(broker, with_portals)
        one_portal = dataclasses.replace(with_portals, portals=())
        with pytest.raises(TopologyError, match="PORTAL_QUEUES=false") as refused:
            await declare(broker, one_portal)
    assert with_portals.unrouted_exchange in str(refused.value)


async def test_check_names_the_portal_exchange_and_each_portal_queue(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = dataclasses.replace(unique_topology(), portals=("north", "south"))
    portals = {key: {"webhook_url": "http://127.0.0.1:9/rest/1/code/"} for key in topology.portals}
    async with connected(amqp_url, topology) as broker:
        await declare(broker, topology)
        env = tool_env(amqp_url, topology, B24_PORTALS=json.dumps(portals))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        out = io.StringIO()
        await run_checks(out=out)
    lines = out.getvalue().splitlines()
    [exchange] = [line for line in lines if f"exchange {topology.update_queue}:" in line]
    assert exchange.startswith("OK"), exchange
    assert "routes each command to its portal's queue (2 portals)" in exchange
    for key in topology.portals:
        [queue] = [line for line in lines if f"queue {topology.portal_queue(key)}:" in line]
        assert queue.startswith("OK"), queue
