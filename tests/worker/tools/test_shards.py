"""The tools and the client with SHARDS > 0: commands go to the exchange with their
item's routing key (and portal), replays follow their item, `check` names the
exchange, the plugin, and queues left from another SHARDS."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

import worker.amqp.topology
from sandbox.testing import RunningSandbox
from schemas import SuccessEvent
from tests.worker.e2e import running_worker, settings_for, stored
from tests.worker.shards import drain_shard, sharded, sharded_topology
from tests.worker.tools.helpers import run_tool, tool_env
from tests.worker.tools.letters import command, failure, fill
from worker.amqp.topology import Topology, declare
from worker.client import UpdateClient
from worker.tools.check import run_checks
from worker.tools.publish import PublishOptions, publish_file

pytestmark = pytest.mark.rabbitmq


@asynccontextmanager
async def declared(
    amqp_url: str, shards: int = 4
) -> AsyncIterator[tuple[Topology, AbstractRobustConnection]]:
    topology = sharded_topology(shards)
    async with sharded(amqp_url, topology) as connection:
        await declare(connection, topology)
        yield topology, connection


async def by_shard(
    connection: AbstractRobustConnection, topology: Topology
) -> dict[str, list[AbstractIncomingMessage]]:
    return {name: await drain_shard(connection, name) for name in topology.work_queues}


async def queued(
    connection: AbstractRobustConnection, topology: Topology
) -> list[AbstractIncomingMessage]:
    """What every shard holds, shard after shard."""
    return [m for messages in (await by_shard(connection, topology)).values() for m in messages]


def deal(item_id: int, n: int) -> dict[str, object]:
    return {"entityTypeId": 2, "id": item_id, "fields": {"title": f"v{n}"}}


async def test_publish_sends_each_items_commands_to_one_shard_in_file_order(
    amqp_url: str, tmp_path: Path
) -> None:
    commands = [deal(item_id, n) for n in range(3) for item_id in range(1, 31)]
    source = tmp_path / "deals.jsonl"
    source.write_text("".join(json.dumps(c) + "\n" for c in commands), encoding="utf-8")
    async with declared(amqp_url) as (topology, broker):
        env = tool_env(amqp_url, topology, SHARDS="4")
        ran = await run_tool("publish", str(source), env=env)
        shards = await by_shard(broker, topology)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"published 90 of 90 commands to {topology.update_queue} (exchange, by item)" in (
        ran.stdout
    )
    assert sum(len(messages) for messages in shards.values()) == 90
    shard_of: dict[int, set[str]] = {}
    for name, messages in shards.items():
        titles: dict[int, list[str]] = {}
        for message in messages:
            body = json.loads(message.body)
            assert message.routing_key == f"2:{body['id']}"
            shard_of.setdefault(body["id"], set()).add(name)
            titles.setdefault(body["id"], []).append(body["fields"]["title"])
        assert all(found == ["v0", "v1", "v2"] for found in titles.values())
    assert all(len(found) == 1 for found in shard_of.values())
    assert sum(1 for messages in shards.values() if messages) > 1


async def test_publish_with_a_portal_names_it_in_a_header_and_in_the_routing_key(
    amqp_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "deals.jsonl"
    source.write_text(json.dumps(deal(7, 1)) + "\n", encoding="utf-8")
    async with declared(amqp_url) as (topology, broker):
        out = io.StringIO()
        options = PublishOptions(
            path=str(source), amqp_url=amqp_url, queue=topology.update_queue, portal="acme"
        )
        code = await publish_file(options, out=out, err=io.StringIO())
        [message] = await queued(broker, topology)
    assert code == 0, out.getvalue()
    assert message.routing_key == "acme:2:7"
    assert (message.headers or {}).get("x-b24-portal") == "acme"


async def test_the_client_publishes_by_item_with_its_portal(amqp_url: str) -> None:
    """No worker consumes: the update times out, and its command waits in its shard."""
    async with (
        declared(amqp_url) as (topology, broker),
        UpdateClient(amqp_url, queue=topology.update_queue, portal="acme") as client,
    ):
        with pytest.raises(TimeoutError):
            await client.update(2, 7, {"title": "x"}, timeout_s=0.3, message_id="m-7")
        with pytest.raises(TimeoutError):
            await client.update(2, 8, {"title": "y"}, timeout_s=0.3, portal="other")
        waiting = await queued(broker, topology)
    found = {m.routing_key: (m.headers or {}).get("x-b24-portal") for m in waiting}
    assert found == {"acme:2:7": "acme", "other:2:8": "other"}


@pytest.mark.sandbox
async def test_the_client_gets_outcomes_from_a_sharded_worker(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal, SHARDS=4)
    async with (
        running_worker(settings) as running,
        sharded(amqp_url, running.topology),
        UpdateClient(amqp_url, queue=settings.UPDATE_QUEUE, portal="default") as client,
    ):
        outcomes = await asyncio.gather(
            *(client.update(2, n, {"title": f"Sharded {n}"}, timeout_s=30) for n in (1, 2, 3))
        )
    assert all(isinstance(outcome, SuccessEvent) for outcome in outcomes)
    assert [stored(portal, 2, n)["title"] for n in (1, 2, 3)] == [f"Sharded {n}" for n in (1, 2, 3)]


async def test_replay_sends_each_letter_to_its_items_shard(amqp_url: str) -> None:
    async with declared(amqp_url) as (topology, broker):
        await fill(
            broker,
            topology.dead_letter_queue,
            [failure(1, "transient", portal="acme"), failure(2, "transient")],
        )
        ran = await run_tool("dlq", "replay", env=tool_env(amqp_url, topology, SHARDS="4"))
        waiting = await queued(broker, topology)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.startswith(
        f"replayed 2 dead letters to {topology.update_queue} (exchange, by item); read 2"
    )
    found = {m.routing_key: json.loads(m.body) for m in waiting}
    assert found == {"acme:2:1": command(1), "2:2": command(2)}


def check_lines(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        verdict, _, rest = line.partition(" ")
        subject, _, detail = rest.strip().partition(": ")
        found[subject] = f"{verdict} {detail}"
    return found


def check_env(monkeypatch: pytest.MonkeyPatch, amqp_url: str, topology: Topology) -> None:
    for name, value in tool_env(amqp_url, topology, SHARDS=str(topology.shards)).items():
        monkeypatch.setenv(name, value)


async def test_check_names_the_exchange_and_every_shard(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with declared(amqp_url) as (topology, _):
        check_env(monkeypatch, amqp_url, topology)
        out = io.StringIO()
        await run_checks(out=out)
    found = check_lines(out.getvalue())
    exchange = f"exchange {topology.update_queue}"
    assert found[exchange] == "OK x-consistent-hash, as the worker needs, for 4 shards"
    lock = f"queue {topology.shard_queue(0)}.claim"
    assert found[lock] == "OK may be declared: each shard is claimed under such a lock"
    for name in topology.work_queues:
        assert found[f"queue {name}"] == "OK quorum, as the worker needs; 0 ready"
    assert f"queue {topology.update_queue}" not in found
    assert f"queue {topology.shard_queue(4)}" not in found


async def test_check_says_a_shard_is_being_claimed_and_leaves_the_claim_alone(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with declared(amqp_url) as (topology, broker):
        claiming = await broker.channel()  # a worker claiming shard 0, on another connection
        lock = f"{topology.shard_queue(0)}.claim"
        await claiming.declare_queue(lock, exclusive=True, arguments={"x-queue-type": "classic"})
        check_env(monkeypatch, amqp_url, topology)
        out = io.StringIO()
        code = await run_checks(out=out)
        still_held = await claiming.declare_queue(lock, passive=True)
        await still_held.delete(if_unused=False, if_empty=False)
    found = check_lines(out.getvalue())
    assert code == 1  # no portal is configured here: that is the one problem
    assert [subject for subject, line in found.items() if line.startswith("PROBLEM")] == ["portal"]
    assert found[f"queue {lock}"] == "OK held by a worker claiming that shard right now"


async def test_check_names_leftover_queues(amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard past the last one, and the queue UPDATE_QUEUE from before shards."""
    async with declared(amqp_url, shards=6) as (larger, broker):
        channel = await broker.channel()
        await channel.declare_queue(
            larger.update_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        topology = Topology(
            update_queue=larger.update_queue,
            result_queue=larger.result_queue,
            dead_letter_queue=larger.dead_letter_queue,
            retry_delays_s=larger.retry_delays_s,
            shards=4,
        )
        check_env(monkeypatch, amqp_url, topology)
        out = io.StringIO()
        code = await run_checks(out=out)
    found = check_lines(out.getvalue())
    assert code == 1
    assert found[f"queue {topology.shard_queue(4)}"].startswith(
        f"PROBLEM queue '{topology.shard_queue(4)}' exists: workers with more than SHARDS=4"
    )
    assert found[f"queue {topology.update_queue}"].startswith(
        "PROBLEM exists with 0 ready, from before SHARDS=4: the workers consume it too"
    )


async def test_check_says_how_to_enable_a_missing_exchange_type(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Provoked with an exchange type no broker has, as in tests/worker/test_topology.py."""
    topology = sharded_topology(4)
    monkeypatch.setattr(worker.amqp.topology, "HASH_EXCHANGE_TYPE", "x-no-such-type")
    async with sharded(amqp_url, topology):
        check_env(monkeypatch, amqp_url, topology)
        out = io.StringIO()
        code = await run_checks(out=out)
    found = check_lines(out.getvalue())
    assert code == 1
    assert found[f"exchange {topology.update_queue}"] == (
        "PROBLEM the broker has no x-no-such-type exchange type, which SHARDS=4 needs: enable "
        "the rabbitmq_consistent_hash_exchange plugin on every broker node with "
        "`rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` (no restart needed), or "
        "set SHARDS=0"
    )
    assert found[f"queue {topology.shard_queue(0)}"].startswith("OK missing")
