"""A bulk job whose worker is killed twice mid-run: its counts in the job store
equal the distinct outcomes on the queues at the end.

A kill leaves commands whose event was confirmed but whose ack never reached
the broker: they are delivered again, end again and publish a second event.
The job counts each message id once, as its latest end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aio_pika
import pytest

from schemas.wire import JOB_HEADER
from tests.reliability.processes import sandbox_process, worker_env, worker_run
from tests.reliability.test_crashes import (
    ended_by,
    leftovers,
    outcomes_of,
    stop_gracefully,
    wait_for,
)
from tests.worker.broker import connected, depth, unique_topology
from worker.amqp.topology import declare
from worker.bulk.store import SqliteJobs

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.reliability]

COMMANDS = 20_000
MISSING_EVERY = 100  # every 100th command names an item the portal does not have
KILL_AFTER = (3_000, 9_000)  # ended by the worker alive, then a kill
JOB = "nightly-2026-12-06"


async def test_a_jobs_counts_equal_its_distinct_outcomes_after_two_kills(
    amqp_url: str, tmp_path: Path
) -> None:
    store_path = tmp_path / "portals.sqlite3"
    store = SqliteJobs(store_path)
    topology = unique_topology()
    with sandbox_process(seed_items=COMMANDS, latency_ms=5) as portal:
        async with connected(amqp_url, topology) as broker:
            await declare(broker, topology)
            await store.publishing(JOB, COMMANDS)
            channel = await broker.channel(publisher_confirms=False)
            for n in range(1, COMMANDS + 1):
                item_id = COMMANDS + n if n % MISSING_EVERY == 0 else n
                body = {"entityTypeId": 2, "id": item_id, "fields": {"title": f"Nightly {n}"}}
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        content_type="application/json",
                        message_id=f"m{n}",
                        headers={JOB_HEADER: JOB},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=topology.update_queue,
                )
            await channel.close()
            await wait_for(lambda: depth(broker, topology.update_queue), COMMANDS, timeout_s=60)
            env = worker_env(
                amqp_url,
                portal.webhook_url,
                topology,
                PREFETCH="300",
                DRAIN_TIMEOUT_S="5",
                REGISTRY_PATH=str(store_path),
            )
            with worker_run(env, tmp_path) as run:
                run.start()
                for threshold in KILL_AFTER:
                    while ended_by(run.log) < threshold:
                        assert run.current.poll() is None, run.log.text()[-3000:]
                        await asyncio.sleep(0.01)
                    run.kill()
                    run.start()
                deadline = time.monotonic() + 180
                while True:
                    state = await store.state(JOB)
                    assert state is not None
                    if state.done:
                        break
                    assert run.current.poll() is None, run.log.text()[-3000:]
                    assert time.monotonic() < deadline, f"{state.ended} of {COMMANDS} ended"
                    await asyncio.sleep(0.2)
                code, _ = await stop_gracefully(run)
            events = await outcomes_of(broker, topology)
            left = await leftovers(broker, topology)
    state = await store.state(JOB)
    await store.close()

    assert code == 0
    assert left == {}
    assert state is not None
    # The latest event of each message id, as the queues hold them.
    latest = {event["messageId"]: event for event in events}
    assert len(latest) == COMMANDS
    distinct = Counter(
        "succeeded" if e["status"] == "succeeded" else e["error"]["class"] for e in latest.values()
    )
    assert state.succeeded == distinct["succeeded"] == COMMANDS - COMMANDS // MISSING_EVERY
    assert state.failed == {"not_found": distinct["not_found"]}
    assert distinct["not_found"] == COMMANDS // MISSING_EVERY
    assert (state.ended, state.in_flight) == (COMMANDS, 0)
    assert {event["job"] for event in events} == {JOB}
    print(f"\n{len(events)} outcome events for {COMMANDS} commands after {len(KILL_AFTER)} kills")
