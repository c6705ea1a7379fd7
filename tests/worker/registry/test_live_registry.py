"""Two worker processes sharing Redis follow the registry while they run: a portal
added through the command line is served within 5 s, with no restart, and one
removed is called no more within 5 s, its commands waiting in its queue."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from redis.asyncio import Redis

from sandbox.config import SandboxConfig
from schemas.wire import PORTAL_HEADER
from tests.reliability.processes import (
    WorkerRun,
    free_port,
    sandbox_process,
    worker_env,
    worker_run,
)
from tests.worker.broker import connected, depth, take, unique_topology
from tests.worker.e2e import events
from worker.amqp.topology import Topology
from worker.registry import new_key

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.redis]

# Both within these of the command line's answer (the registry is read every second).
TAKEN_UP_S = 5.0
LET_GO_S = 5.0


def portals(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "portals", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def until_logged(run: WorkerRun, event: str, timeout_s: float, **fields: Any) -> None:
    """Until every worker of ``run`` logged ``event`` with ``fields``."""
    deadline = time.monotonic() + timeout_s
    while True:
        run.read_logs()
        if all(
            any(all(r.get(k) == v for k, v in fields.items()) for r in log.events(event))
            for log in run.logs
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not every worker logged {event} {fields} in {timeout_s} s")
        await asyncio.sleep(0.05)


async def send(
    connection: aio_pika.abc.AbstractConnection, exchange: str, body: Any, portal: str = "south"
) -> None:
    """As producers do with portal queues: to the headers exchange, naming the portal."""
    channel = await connection.channel()
    target = await channel.get_exchange(exchange)
    message = aio_pika.Message(
        json.dumps(body).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={PORTAL_HEADER: portal},
    )
    await target.publish(message, routing_key="")
    await channel.close()


def registry_topology() -> Topology:
    """As the workers declare it: north, the configured portal, has a portal queue too."""
    return dataclasses.replace(unique_topology(), by_portal=True, portals=("north",))


def registry_env(
    amqp_url: str, redis_url: str, north: str, topology: Topology, **extra: str
) -> dict[str, str]:
    """Workers with north (a webhook) configured and the registry in Redis."""
    return worker_env(
        amqp_url,
        north,
        topology,
        B24_PORTAL_KEY="north",
        B24_DEFAULT_PORTAL="north",
        LIMITER_URL=redis_url,
        REGISTRY_KEY=new_key(),
        DRAIN_TIMEOUT_S="5",
        **extra,
    )


async def test_two_workers_follow_the_registry_without_a_restart(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    topology = registry_topology()
    south_queue = topology.portal_queue("south")
    with (
        sandbox_process(seed_items=10) as north,
        sandbox_process(seed_items=10) as south,
    ):
        env = registry_env(amqp_url, redis_url, north.webhook_url, topology)
        try:
            async with connected(amqp_url, topology) as broker:
                with worker_run(env, tmp_path) as run:
                    run.start()
                    run.start()
                    await until_logged(run, "worker.started", 30)

                    portals(env, "add", "south", "--webhook-url", south.webhook_url)
                    added = time.monotonic()
                    command = {"entityTypeId": 2, "id": 3, "fields": {"title": "registered"}}
                    await send(broker, topology.update_queue, command)
                    done = events(await take(broker, topology.result_queue, 1, timeout_s=10))
                    taken_up = time.monotonic() - added
                    assert [(e["status"], e["portal"]) for e in done] == [("succeeded", "south")]
                    assert taken_up <= TAKEN_UP_S, taken_up
                    assert south.items(2)[3]["title"] == "registered"
                    # The other worker follows the registry too (one active consumer each).
                    await until_logged(run, "portal.added", TAKEN_UP_S, portal="south")

                    portals(env, "remove", "south")
                    await until_logged(run, "portal.removed", LET_GO_S, portal="south")
                    calls = south.counters()["requests"]
                    later = {"entityTypeId": 2, "id": 4, "fields": {"title": "after removal"}}
                    await send(broker, topology.update_queue, later)
                    await asyncio.sleep(2.0)
                    assert south.counters()["requests"] == calls
                    assert await depth(broker, south_queue) == 1  # waiting, not failed
                    assert await take(broker, topology.dead_letter_queue, 1, timeout_s=0.5) == []
                    assert south.items(2)[4]["title"] != "after removal"
        finally:
            async with connected(amqp_url, topology) as broker:
                channel = await broker.channel()
                await channel.queue_delete(south_queue)
            redis = Redis.from_url(redis_url)
            keys = [
                k
                async for k in redis.scan_iter(
                    match=f"b24-worker:registry:{topology.update_queue}:*"
                )
            ]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


async def forget(redis_url: str, *patterns: str) -> None:
    redis = Redis.from_url(redis_url)
    for pattern in patterns:
        keys = [key async for key in redis.scan_iter(match=pattern)]
        if keys:
            await redis.delete(*keys)
    await redis.aclose()


async def test_a_portal_installed_through_one_worker_is_served_by_both(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The sandbox installs the application on one worker's INSTALL_PORT; the registry
    in Redis carries it to the other, and a command naming its member_id is applied
    within 5 s of the install, with no restart."""
    topology = registry_topology()
    app, port = SandboxConfig(), free_port()
    with (
        sandbox_process(seed_items=10) as north,
        sandbox_process(seed_items=10) as east,
    ):
        async with httpx.AsyncClient(timeout=10) as client:
            member = (await client.get(east.control_url + "/")).json()["member_id"]
        env = registry_env(
            amqp_url,
            redis_url,
            north.webhook_url,
            topology,
            B24_APP_CLIENT_ID=app.client_id,
            B24_APP_CLIENT_SECRET=app.client_secret,
            B24_OAUTH_TOKEN_URL=east.token_url,
        )
        try:
            async with connected(amqp_url, topology) as broker:
                with worker_run(env, tmp_path) as run:
                    run.start(INSTALL_PORT=str(port))  # the handler Bitrix24 calls
                    run.start()
                    await until_logged(run, "worker.started", 30)

                    async with httpx.AsyncClient(timeout=30) as client:
                        answer = await client.post(
                            east.control_url + "/app/install",
                            json={"handler": f"http://127.0.0.1:{port}/b24/events"},
                        )
                    assert answer.json()["status"] == 200, answer.text
                    installed = time.monotonic()
                    command = {"entityTypeId": 2, "id": 5, "fields": {"title": "installed"}}
                    await send(broker, topology.update_queue, command, portal=member)
                    done = events(await take(broker, topology.result_queue, 1, timeout_s=10))
                    taken_up = time.monotonic() - installed
                    assert [(e["status"], e["portal"]) for e in done] == [("succeeded", member)]
                    assert taken_up <= TAKEN_UP_S, taken_up
                    assert east.items(2)[5]["title"] == "installed"
                    await until_logged(run, "portal.added", TAKEN_UP_S, portal=member)
        finally:
            async with connected(amqp_url, topology) as broker:
                channel = await broker.channel()
                await channel.queue_delete(topology.portal_queue(member))
            await forget(
                redis_url,
                f"b24-worker:registry:{topology.update_queue}:*",
                f"b24-worker:oauth:{member}:*",
            )
