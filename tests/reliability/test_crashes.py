"""The worker dies or is stopped mid-run, as a process: nothing is lost, what comes
twice is only what was in flight, and an item's commands keep their order.

Real processes (`python -m worker sandbox` with limits off, `python -m worker
run` with JSON logs to a file), the broker at AMQP_URL, queues of their own.
The outcomes are read from RESULT_QUEUE and DEAD_LETTER_QUEUE after the run;
the worker's `message.settled` lines say which incarnation ended what.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from schemas.wire import PORTAL_HEADER
from scripts.amqp_ping import answers
from tests.conftest import BrokerControl
from tests.reliability.processes import (
    JsonLog,
    Portal,
    WorkerRun,
    sandbox_portals,
    sandbox_process,
    stamp,
    worker_env,
    worker_run,
)
from tests.worker.broker import connected, depth, drain, unique_topology
from tests.worker.shards import drain_shard
from worker.amqp.topology import Topology, declare

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.reliability]

SEED = 20240611
PREFETCH = 100
DRAIN_TIMEOUT_S = 5
EXIT_SLACK_S = 3  # allowed on top of DRAIN_TIMEOUT_S for the process to exit


@dataclass(frozen=True)
class Command:
    message_id: str
    item_id: int
    body: dict[str, Any]
    valid: bool = True


def deal(item_id: int, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": fields}


def workload(rng: random.Random, *, singles: int, repeated: int, per_item: int) -> list[Command]:
    """`singles` items with one command each (every 100th invalid), and `repeated`
    items with `per_item` commands each, interleaved at random but near each other
    so that one item's commands are often held by the worker together."""
    keyed: list[tuple[float, Command]] = []
    span = float(singles + repeated * per_item)
    for item_id in range(1, singles + 1):
        body = deal(item_id, title=f"single-{item_id}")
        valid = item_id % 100 != 0
        if not valid:
            body["fields"]["opened"] = 1  # refused: a validation failure event
        command = Command(f"s-{item_id}", item_id, body, valid)
        keyed.append((rng.uniform(0, span), command))
    for item_id in range(singles + 1, singles + repeated + 1):
        at = rng.uniform(0, span)
        for n in range(per_item):
            command = Command(f"r-{item_id}-{n}", item_id, deal(item_id, title=f"v{n}-{item_id}"))
            keyed.append((at, command))
            at += rng.uniform(0.5, 30)
    return [command for _, command in sorted(keyed, key=lambda pair: pair[0])]


async def publish_in_order(
    broker: AbstractRobustConnection, queue: str, commands: list[Command]
) -> None:
    """On one channel, in order (the broker keeps a channel's order); then wait until
    every one is on the queue."""
    channel = await broker.channel(publisher_confirms=False)
    for command in commands:
        await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(command.body).encode(),
                content_type="application/json",
                message_id=command.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )
    await channel.close()
    await wait_for(lambda: depth(broker, queue), len(commands), timeout_s=30)


async def wait_for(read: Callable[[], Any], wanted: int, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await read()) < wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{got} of {wanted} in {timeout_s} s")
        await asyncio.sleep(0.1)


async def outcomes_of(broker: AbstractRobustConnection, topology: Topology) -> list[dict[str, Any]]:
    """Every event now on the result and dead-letter queues (taken, so they end empty)."""
    taken = await drain(broker, topology.result_queue)
    taken += await drain(broker, topology.dead_letter_queue)
    return [json.loads(message.body) for message in taken]


async def leftovers(broker: AbstractRobustConnection, topology: Topology) -> dict[str, int]:
    """Messages still waiting anywhere a command can be, counted by taking them."""
    names = [topology.update_queue, topology.retry_queue, topology.poison_queue]
    names += [topology.tier_queue(delay) for delay in topology.retry_delays_s]
    counts = {name: len(await drain(broker, name)) for name in names}
    return {name: count for name, count in counts.items() if count}


def settled_ids(run: WorkerRun) -> set[str]:
    run.read_logs()
    return {str(record["message_id"]) for log in run.logs for record in log.settled()}


def ended_by(log: JsonLog) -> int:
    log.read()
    return len(log.settled())


async def until_every_command_ended(
    run: WorkerRun, commands: list[Command], *, timeout_s: float
) -> None:
    """The worker's own logs name every command as ended; the queues are checked after."""
    wanted = {command.message_id for command in commands}
    deadline = time.monotonic() + timeout_s
    while not wanted <= settled_ids(run):
        assert run.current.poll() is None, run.log.text()[-3000:]
        if time.monotonic() > deadline:
            missing = len(wanted - settled_ids(run))
            raise AssertionError(f"{missing} commands had not ended after {timeout_s} s")
        await asyncio.sleep(0.05)


def history(
    item_id: int, commands: list[Command], run: WorkerRun, stored: dict[int, dict[str, Any]]
) -> str:
    """What became of one item's commands, worker by worker, for a failure's message."""
    ids = [command.message_id for command in commands if command.item_id == item_id]
    lines = [f"item {item_id} holds {stored[item_id]['title']!r}; its commands: {ids}"]
    for index, log in enumerate(run.logs):
        seen = [
            f"{record['message_id']} {record.get('outcome')} at {record.get('timestamp')}"
            for record in log.events("message.settled")
            if record.get("message_id") in ids
        ]
        lines.append(f"worker {index + 1}: {seen}")
    return "\n".join(lines)


async def until_answered(portal: Portal, timeout_s: float = 30.0) -> None:
    """Wait until the portal has answered every request it took in."""
    deadline = time.monotonic() + timeout_s
    while (await asyncio.to_thread(portal.counters))["in_flight"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the portal still ran requests after {timeout_s} s")
        await asyncio.sleep(0.05)


async def until_ended(run: WorkerRun, count: int) -> None:
    """Wait until the current worker has ended ``count`` commands (it must not exit)."""
    while ended_by(run.log) < count:
        assert run.current.poll() is None, run.log.text()[-3000:]
        await asyncio.sleep(0.01)


async def kill_at_random(
    run: WorkerRun, kill_after: list[int], rng: random.Random
) -> list[JsonLog]:
    """Start a worker; SIGKILL it (and start the next) once it has ended each of
    ``kill_after`` commands, then a random moment later: every kill lands mid-run,
    with calls out and events unconfirmed. Returns the killed workers' logs."""
    run.start()
    killed_logs = []
    for threshold in kill_after:
        await until_ended(run, threshold)
        await asyncio.sleep(rng.uniform(0, 0.2))
        run.kill()
        killed_logs.append(run.log)
        run.start()
    return killed_logs


async def stop_gracefully(run: WorkerRun) -> tuple[int, float]:
    """SIGTERM the current worker; its exit code and how long it took."""
    process = run.current
    sent = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, DRAIN_TIMEOUT_S + EXIT_SLACK_S + 5)
    return code, time.monotonic() - sent


# 1. SIGKILL at random moments ---------------------------------------------------------------

SINGLES = 2400
REPEATED = 150
PER_ITEM = 4
KILLS = 4


async def test_sigkill_at_random_moments_loses_nothing_and_keeps_each_items_order(
    amqp_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    commands = workload(rng, singles=SINGLES, repeated=REPEATED, per_item=PER_ITEM)
    total = len(commands)
    # Kill each worker once it has ended this many commands, then a random moment later:
    # every kill lands mid-run, with calls out and events unconfirmed.
    kill_after = [rng.randint(150, 600) for _ in range(KILLS)]
    topology = unique_topology()
    with sandbox_process(seed_items=SINGLES + REPEATED, latency_ms=20) as portal:
        async with connected(amqp_url, topology) as broker:
            await declare(broker, topology)
            await publish_in_order(broker, topology.update_queue, commands)
            env = worker_env(
                amqp_url,
                portal.webhook_url,
                topology,
                PREFETCH=str(PREFETCH),
                DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S),
            )
            with worker_run(env, tmp_path) as run:
                started = time.monotonic()
                killed_logs = await kill_at_random(run, kill_after, rng)
                await until_every_command_ended(run, commands, timeout_s=60)
                code, _ = await stop_gracefully(run)
                took_s = time.monotonic() - started
                run.read_logs()
            events = await outcomes_of(broker, topology)
            left = await leftovers(broker, topology)
        stored = portal.items(2)

    assert code == 0, run.log.text()[-3000:]
    assert left == {}
    counts = Counter(str(event["messageId"]) for event in events)
    # Nothing lost: every command has an outcome, and nothing else has one.
    assert set(counts) == {command.message_id for command in commands}
    by_id = {command.message_id: command for command in commands}
    for event in events:
        expected = "succeeded" if by_id[event["messageId"]].valid else "failed"
        assert event["status"] == expected, event

    # What came twice was in flight at a kill: delivered, its event confirmed, its ack
    # not yet at the broker. Acks leave in the order messages settle, so such a message
    # is among the last PREFETCH the killed worker settled.
    duplicates = {message_id: n - 1 for message_id, n in counts.items() if n > 1}
    later: list[set[str]] = []
    for index, log in enumerate(run.logs):
        ids = [str(record["message_id"]) for record in log.settled()]
        assert len(ids) == len(set(ids)), f"worker {index + 1} settled a message twice"
        later.append(set(ids))
    again_per_kill = []
    for index, log in enumerate(killed_logs):
        settled_here = [str(record["message_id"]) for record in log.settled()]
        after = set().union(*later[index + 1 :])
        again = [position for position, m in enumerate(settled_here) if m in after]
        again_per_kill.append(len(again))
        assert len(again) <= PREFETCH
        assert all(position >= len(settled_here) - PREFETCH for position in again), (
            f"worker {index + 1}: a message settled long before the kill came again"
        )
    assert max(counts.values()) <= 1 + KILLS
    assert sum(duplicates.values()) <= KILLS * PREFETCH
    # The rest had their event confirmed as the worker died, before it could log them.
    print(
        f"\n{total} commands, {KILLS} SIGKILLs after {kill_after} ended, {took_s:.1f} s; "
        f"{len(events)} outcome events, {sum(duplicates.values())} duplicates; "
        f"settled by a killed worker and again after its kill: {again_per_kill}"
    )

    # Each item ends with its last command's value (README: commands for one item
    # take effect in the order they entered the queue; no retries here).
    last: dict[int, Command] = {}
    for command in commands:
        last[command.item_id] = command
    for item_id, command in last.items():
        title = stored[item_id]["title"]
        if command.valid:
            assert title == command.body["fields"]["title"], (item_id, title)
        else:
            assert title == f"Deal #{item_id}"  # refused: the seeded title stays


# 2. SIGTERM in a busy run -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latency_ms", "drain_timeout_s"),
    [
        pytest.param(300, DRAIN_TIMEOUT_S, id="calls-end-within-the-drain"),
        # The drain gives up on calls still out; the commands held behind them for
        # their items must not come back ahead of them.
        pytest.param(4000, 2, id="calls-outlast-the-drain"),
    ],
)
async def test_sigterm_in_a_busy_run_drains_in_time_and_no_acked_message_comes_again(
    amqp_url: str, tmp_path: Path, latency_ms: int, drain_timeout_s: int
) -> None:
    rng = random.Random(SEED + 2)
    commands = workload(rng, singles=800, repeated=50, per_item=4)
    topology = unique_topology()
    # Slow answers keep calls out when the signal comes: the drain has work to finish.
    with sandbox_process(seed_items=850, latency_ms=latency_ms) as portal:
        async with connected(amqp_url, topology) as broker:
            await declare(broker, topology)
            await publish_in_order(broker, topology.update_queue, commands)
            env = worker_env(
                amqp_url,
                portal.webhook_url,
                topology,
                PREFETCH=str(PREFETCH),
                BATCH_SIZE="20",
                DRAIN_TIMEOUT_S=str(drain_timeout_s),
            )
            stop_after = rng.randint(50, 100)
            with worker_run(env, tmp_path) as run:
                run.start()
                first = run.log
                while ended_by(first) < stop_after:
                    assert run.current.poll() is None, first.text()[-3000:]
                    await asyncio.sleep(0.01)
                code, drain_s = await stop_gracefully(run)
                first.read()
                ended_first = {str(record["message_id"]) for record in first.settled()}
                left_after_first = len({c.message_id for c in commands} - ended_first)
                # A call the drain gave up on is still at the portal and lands there
                # later: no stop can recall it. The next worker starts after it landed.
                await until_answered(portal)
                portal.set_faults(latency_ms=0)
                run.start()
                await until_every_command_ended(run, commands, timeout_s=60)
                second_code, _ = await stop_gracefully(run)
                run.read_logs()
            events = await outcomes_of(broker, topology)
            left = await leftovers(broker, topology)
        stored = portal.items(2)

    assert code == 0, first.text()[-3000:]
    assert drain_s <= drain_timeout_s + EXIT_SLACK_S
    stops = [
        r["event"] for r in first.records if r.get("event") in ("worker.stopping", "worker.stopped")
    ]
    assert stops == ["worker.stopping", "worker.stopped"]
    # 1,000 commands at 300 ms a call of 20 cannot all end before 100 have: the stop
    # always comes mid-run (counted from the first worker's own log).
    assert left_after_first > 0, "the run ended before SIGTERM: nothing was left to hand back"
    assert second_code == 0
    assert left == {}
    counts = Counter(str(event["messageId"]) for event in events)
    assert set(counts) == {command.message_id for command in commands}
    successes = Counter(str(e["messageId"]) for e in events if e["status"] == "succeeded")
    [started] = first.events("worker.started")
    [stopping] = first.events("worker.stopping")
    before = {str(r["message_id"]) for r in first.settled() if stamp(r) <= stamp(stopping)}
    during = {str(r["message_id"]) for r in first.settled()} - before
    assert before, "nothing was settled before the signal"
    # Settled before the signal: acked then, never delivered again.
    assert {m for m in before if successes[m] > 1} == set()
    # Settled during the drain: the drain sends their acks before it closes.
    assert {m for m in during if counts[m] > 1} == set()
    print(
        f"\nSIGTERM {stamp(stopping) - stamp(started):.1f} s into the run: exit {code} "
        f"in {drain_s:.2f} s (DRAIN_TIMEOUT_S={drain_timeout_s}); settled before it "
        f"{len(before)}, during the drain {len(during)}, left on the queue {left_after_first}; "
        f"duplicates {sum(n - 1 for n in counts.values())}"
    )
    # Each item ends with its last command's value, across the stop.
    last = {command.item_id: command for command in commands}
    for item_id, command in last.items():
        if command.valid:
            assert stored[item_id]["title"] == command.body["fields"]["title"], history(
                item_id, commands, run, stored
            )


# 3. The broker restarts mid-run -------------------------------------------------------------

# Signs of an ack or nack sent on a channel the broker no longer knows.
STALE_CHANNEL_SIGNS = ("unknown delivery tag", "PRECONDITION_FAILED", "PreconditionFailed")


async def broker_answers(amqp_url: str, *, timeout_s: float) -> float:
    """Wait until the broker accepts AMQP connections; returns that moment (epoch seconds)."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(answers, amqp_url, 1.0):
        if time.monotonic() > deadline:
            raise AssertionError(f"the broker did not answer within {timeout_s} s")
        await asyncio.sleep(0.1)
    return time.time()


async def test_after_a_broker_restart_the_worker_consumes_again_and_loses_nothing(
    amqp_url: str, tmp_path: Path, broker_control: BrokerControl
) -> None:
    rng = random.Random(SEED + 3)
    commands = workload(rng, singles=1500, repeated=50, per_item=4)
    topology = unique_topology()
    with sandbox_process(seed_items=1550, latency_ms=200) as portal:
        async with connected(amqp_url, topology) as broker:
            await declare(broker, topology)
            await publish_in_order(broker, topology.update_queue, commands)
            env = worker_env(
                amqp_url,
                portal.webhook_url,
                topology,
                PREFETCH=str(PREFETCH),
                BATCH_SIZE="20",
                DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S),
            )
            restart_after = rng.randint(200, 400)
            with worker_run(env, tmp_path) as run:
                run.start()
                await until_ended(run, restart_after)
                # One short restart: every user of this broker is cut off meanwhile.
                try:
                    await asyncio.to_thread(broker_control.rabbitmqctl, "stop_app")
                    stopped = time.time()
                    await asyncio.sleep(1)
                finally:
                    await asyncio.to_thread(broker_control.rabbitmqctl, "start_app")
                    accepting = await broker_answers(amqp_url, timeout_s=60)
                await until_every_command_ended(run, commands, timeout_s=90)
                code, _ = await stop_gracefully(run)
                run.read_logs()
            await asyncio.wait_for(broker.connected.wait(), 30)  # the test's own, reconnected
            events = await outcomes_of(broker, topology)
            left = await leftovers(broker, topology)
        stored = portal.items(2)

    log = run.log
    assert len(run.processes) == 1
    assert code == 0, log.text()[-3000:]
    after = [stamp(r) for r in log.settled() if stamp(r) > accepting]
    assert after, "nothing was settled after the broker came back"
    reconnect_s = min(after) - accepting
    assert reconnect_s < 10
    stale = [
        line for line in log.text().splitlines() if any(s in line for s in STALE_CHANNEL_SIGNS)
    ]
    assert stale == []
    assert left == {}
    counts = Counter(str(event["messageId"]) for event in events)
    assert set(counts) == {command.message_id for command in commands}
    duplicates = sum(n - 1 for n in counts.values())
    # Only what the worker held unacked when the connection went can come twice.
    assert duplicates <= PREFETCH
    lost_acks = len(log.events("settle.lost"))
    crashed = len(log.events("settle.crashed"))  # an event publish cut off by the drop
    print(
        f"\nbroker down {accepting - stopped:.1f} s; first message settled {reconnect_s:.1f} s "
        f"after it accepted connections again; {duplicates} duplicates; "
        f"{lost_acks} settle.lost and {crashed} settle.crashed lines; "
        f"stale-channel errors: {len(stale)}"
    )
    last = {command.item_id: command for command in commands}
    for item_id, command in last.items():
        if command.valid:
            assert stored[item_id]["title"] == command.body["fields"]["title"], item_id


# 4. SIGKILL at random moments, a queue per portal -------------------------------------------

PORTALS = ("portal1", "portal2", "portal3")  # the keys `sandbox --portals 3` gives them
PORTAL_PREFETCH = 100


async def publish_to_portals(
    broker: AbstractRobustConnection, topology: Topology, commands: list[tuple[str, Command]]
) -> None:
    """As producers do with portal queues: to the exchange, each command naming its
    portal in the header, on one channel and in order; then wait until every one is
    on its portal's queue."""
    channel = await broker.channel(publisher_confirms=False)
    exchange = await channel.get_exchange(topology.update_queue)
    for portal, command in commands:
        await exchange.publish(
            aio_pika.Message(
                json.dumps(command.body).encode(),
                content_type="application/json",
                message_id=command.message_id,
                headers={PORTAL_HEADER: portal},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"2:{command.item_id}",
        )
    await channel.close()

    async def queued() -> int:
        return sum([await depth(broker, topology.portal_queue(key)) for key in PORTALS])

    await wait_for(queued, len(commands), timeout_s=30)


def portals_workload(
    rng: random.Random,
) -> tuple[dict[str, list[Command]], list[tuple[str, Command]]]:
    """Each portal's commands (`workload`, 900 each, ids prefixed with the portal's
    key), and all of them interleaved, each portal's in its own order."""
    by_portal: dict[str, list[Command]] = {}
    for key in PORTALS:
        commands = workload(rng, singles=700, repeated=50, per_item=4)
        by_portal[key] = [
            dataclasses.replace(command, message_id=f"{key}/{command.message_id}")
            for command in commands
        ]
    mixed = [
        (key, command)
        for group in zip(*by_portal.values(), strict=True)
        for key, command in zip(PORTALS, group, strict=True)
    ]
    return by_portal, mixed


@dataclass
class ThreePortals:
    """Three sandbox portals (one `sandbox --portals 3`), their commands queued
    through the exchange, and a worker environment reading them from a
    B24_PORTALS_FILE; after the test's body, what the run left."""

    by_portal: dict[str, list[Command]]
    mixed: list[tuple[str, Command]]
    topology: Topology
    env: dict[str, str]
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    left: dict[str, int] = dataclasses.field(default_factory=dict)
    stored: dict[str, dict[int, dict[str, Any]]] = dataclasses.field(default_factory=dict)

    @property
    def every(self) -> list[Command]:
        return [command for _, command in self.mixed]

    @property
    def portal_of(self) -> dict[str, str]:
        return {command.message_id: key for key, command in self.mixed}

    def check_outcomes(self) -> int:
        """Every command ended, nothing waits anywhere, each outcome names its
        command's portal and is the one expected; returns the duplicates."""
        assert self.left == {}
        counts = Counter(str(event["messageId"]) for event in self.events)
        assert set(counts) == set(self.portal_of)
        by_id = {command.message_id: command for command in self.every}
        for event in self.events:
            assert event["portal"] == self.portal_of[event["messageId"]], event
            expected = "succeeded" if by_id[event["messageId"]].valid else "failed"
            assert event["status"] == expected, event
        return sum(n - 1 for n in counts.values())

    def check_each_item_ends_with_its_last_command(self) -> None:
        for key, commands in self.by_portal.items():
            last = {command.item_id: command for command in commands}
            for item_id, command in last.items():
                title = self.stored[key][item_id]["title"]
                if command.valid:
                    assert title == command.body["fields"]["title"], (key, item_id, title)
                else:
                    assert title == f"Deal #{item_id}", (key, item_id, title)  # refused

    def again_after(self, settled_here: list[str], later: set[str], *, who: str) -> int:
        """How many of what a stopped worker settled (in order) were settled again
        ``later``; each must be among the last PORTAL_PREFETCH of its portal (its
        queue's channel acks in the order its messages settle)."""
        again = 0
        for key in PORTALS:
            mine = [message_id for message_id in settled_here if self.portal_of[message_id] == key]
            positions = [n for n, message_id in enumerate(mine) if message_id in later]
            assert all(n >= len(mine) - PORTAL_PREFETCH for n in positions), (
                f"{who}: a message of {key} settled long before it stopped came again"
            )
            again += len(positions)
        return again


@asynccontextmanager
async def three_portals(
    amqp_url: str, tmp_path: Path, rng: random.Random, **settings: str
) -> AsyncIterator[ThreePortals]:
    by_portal, mixed = portals_workload(rng)
    topology = dataclasses.replace(unique_topology(), portals=PORTALS)
    portals_file = tmp_path / "portals.json"
    with sandbox_portals(len(PORTALS), portals_file, seed_items=750, latency_ms=20) as sandboxes:
        assert set(sandboxes) == set(PORTALS)
        async with connected(amqp_url, topology) as broker:
            await declare(broker, topology)
            await publish_to_portals(broker, topology, mixed)
            env = worker_env(
                amqp_url,
                sandboxes[PORTALS[0]].webhook_url,
                topology,
                B24_PORTALS_FILE=str(portals_file),
                PREFETCH=str(PREFETCH),
                PORTAL_PREFETCH=str(PORTAL_PREFETCH),
                DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S),
                **settings,
            )
            del env["B24_WEBHOOK_URL"]  # every portal from the file
            scenario = ThreePortals(by_portal, mixed, topology, env)
            yield scenario
            await asyncio.wait_for(broker.connected.wait(), 30)  # reconnected, if it was cut
            scenario.events = await outcomes_of(broker, topology)
            scenario.left = await portal_leftovers(broker, topology)
        scenario.stored = {key: sandbox.items(2) for key, sandbox in sandboxes.items()}


async def portal_leftovers(broker: AbstractRobustConnection, topology: Topology) -> dict[str, int]:
    """`leftovers`, and what waits on each portal's queue."""
    left = await leftovers(broker, topology)
    for key in PORTALS:
        waiting = await drain_shard(broker, topology.portal_queue(key))
        if waiting:
            left[topology.portal_queue(key)] = len(waiting)
    return left


async def test_sigkill_with_a_queue_per_portal_loses_nothing_and_keeps_each_items_order(
    amqp_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 4)
    kill_after = [rng.randint(150, 600) for _ in range(KILLS)]
    async with three_portals(amqp_url, tmp_path, rng) as scenario:
        with worker_run(scenario.env, tmp_path) as run:
            killed_logs = await kill_at_random(run, kill_after, rng)
            await until_every_command_ended(run, scenario.every, timeout_s=60)
            code, _ = await stop_gracefully(run)
            run.read_logs()

    assert code == 0, run.log.text()[-3000:]
    duplicates = scenario.check_outcomes()
    later = []
    for index, log in enumerate(run.logs):
        ids = [str(record["message_id"]) for record in log.settled()]
        assert len(ids) == len(set(ids)), f"worker {index + 1} settled a message twice"
        later.append(set(ids))
    again_per_kill = [
        scenario.again_after(
            [str(record["message_id"]) for record in log.settled()],
            set().union(*later[index + 1 :]),
            who=f"worker {index + 1}",
        )
        for index, log in enumerate(killed_logs)
    ]
    assert duplicates <= KILLS * len(PORTALS) * PORTAL_PREFETCH
    print(
        f"\n{len(scenario.every)} commands over {len(PORTALS)} portal queues, {KILLS} SIGKILLs "
        f"after {kill_after} ended; {duplicates} duplicates; settled by a killed worker and "
        f"again after its kill: {again_per_kill}"
    )
    scenario.check_each_item_ends_with_its_last_command()


async def test_after_the_broker_drops_every_connection_each_portal_queue_is_consumed_again(
    amqp_url: str, tmp_path: Path, broker_control: BrokerControl
) -> None:
    # The portal queues are read over connections of their own besides the main one:
    # each must come back, with its queues' consumers, and nothing held may be lost.
    rng = random.Random(SEED + 5)
    drop_after = [rng.randint(200, 500), rng.randint(1200, 1600)]
    async with three_portals(amqp_url, tmp_path, rng) as scenario:
        with worker_run(scenario.env, tmp_path) as run:
            run.start()
            dropped = []
            for threshold in drop_after:
                await until_ended(run, threshold)
                await asyncio.to_thread(
                    broker_control.rabbitmqctl, "close_all_connections", "connection test"
                )
                dropped.append(time.time())
            await until_every_command_ended(run, scenario.every, timeout_s=90)
            code, _ = await stop_gracefully(run)
            run.read_logs()

    log = run.log
    assert len(run.processes) == 1
    assert code == 0, log.text()[-3000:]
    stale = [
        line for line in log.text().splitlines() if any(s in line for s in STALE_CHANNEL_SIGNS)
    ]
    assert stale == []
    duplicates = scenario.check_outcomes()
    # Every portal's queue was consumed again after the last drop.
    portal_of = scenario.portal_of
    after_last = [record for record in log.settled() if stamp(record) > dropped[-1]]
    assert {portal_of[str(record["message_id"])] for record in after_last} == set(PORTALS)
    back_s = [
        min(stamp(record) for record in log.settled() if stamp(record) > moment) - moment
        for moment in dropped
    ]
    # Only what the worker held unacked when its connections went can come twice.
    assert duplicates <= len(drop_after) * len(PORTALS) * PORTAL_PREFETCH
    print(
        f"\n{len(scenario.every)} commands over {len(PORTALS)} portal queues, every connection "
        f"dropped after {drop_after} ended; {duplicates} duplicates; "
        f"{len(log.events('consumer.lost'))} consumer.lost lines; the first message settled "
        + " and ".join(f"{seconds:.1f} s" for seconds in back_s)
        + " after each drop"
    )
    scenario.check_each_item_ends_with_its_last_command()


async def test_a_replica_killed_mid_run_leaves_its_portal_queues_to_the_other_and_loses_nothing(
    amqp_url: str, tmp_path: Path
) -> None:
    # Two workers register on every portal queue; each queue lets one of them take
    # it. The one that has settled more is killed: the other, in line on its
    # queues, takes them over, beginning with what the dead one held.
    rng = random.Random(SEED + 6)
    kill_after = rng.randint(400, 800)
    # Who holds which queue changes by the kill alone.
    async with three_portals(amqp_url, tmp_path, rng, PORTAL_BALANCE_S="0") as scenario:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        with (
            worker_run(scenario.env, tmp_path / "a") as one,
            worker_run(scenario.env, tmp_path / "b") as other,
        ):
            one.start()
            other.start()
            runs = (one, other)
            while sum(ended_by(run.log) for run in runs) < kill_after:
                for run in runs:
                    assert run.current.poll() is None, run.log.text()[-3000:]
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0, 0.2))
            victim, survivor = sorted(runs, key=lambda run: ended_by(run.log), reverse=True)
            killed_at = victim.kill()
            wanted = set(scenario.portal_of)
            deadline = time.monotonic() + 60
            while not wanted <= settled_ids(victim) | settled_ids(survivor):
                assert survivor.current.poll() is None, survivor.log.text()[-3000:]
                assert time.monotonic() < deadline, "not every command ended in 60 s"
                await asyncio.sleep(0.05)
            code, _ = await stop_gracefully(survivor)
            victim.read_logs()
            survivor.read_logs()

    assert code == 0, survivor.log.text()[-3000:]
    duplicates = scenario.check_outcomes()
    dead = [str(record["message_id"]) for record in victim.log.settled()]
    alive = [str(record["message_id"]) for record in survivor.log.settled()]
    assert len(dead) == len(set(dead))
    assert len(alive) == len(set(alive))
    # The survivor took over every portal the killed worker was applying.
    portal_of = scenario.portal_of
    held_by_dead = {portal_of[message_id] for message_id in dead}
    taken_over = {
        portal_of[str(record["message_id"])]
        for record in survivor.log.settled()
        if stamp(record) > killed_at
    }
    assert held_by_dead <= taken_over
    again = scenario.again_after(dead, set(alive), who="the killed worker")
    assert duplicates <= len(PORTALS) * PORTAL_PREFETCH
    print(
        f"\n{len(scenario.every)} commands over {len(PORTALS)} portal queues, 2 workers, the "
        f"one that settled {len(dead)} killed; the other settled {len(alive)} and took over "
        f"{sorted(taken_over)}; {duplicates} duplicates, {again} settled by both"
    )
    scenario.check_each_item_ends_with_its_last_command()
