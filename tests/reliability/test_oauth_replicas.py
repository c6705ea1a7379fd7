"""Replicas of one OAuth application: short access tokens, one-use refresh tokens, one Redis.

Three `python -m worker run` processes share LIMITER_URL and one OAuth
application on the sandbox, whose access tokens live two seconds and whose
refresh tokens can be used once. For a minute of steady traffic every replica
must stay ready, none may see its credentials refused, and every command must
be applied once: the replicas take turns refreshing (the store's lock), each
takes the access token another fetched, and none overwrites a newer token.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from redis.asyncio import Redis

from sandbox.config import SandboxConfig
from tests.reliability.processes import free_port, sandbox_process, worker_env, worker_run
from tests.worker.broker import connected, drain, publish_all, unique_topology
from worker.bitrix.tokens import StoredToken

pytestmark = pytest.mark.redis

REPLICAS = 3
ACCESS_TOKEN_TTL_S = 2.0
TRAFFIC_S = 60.0
PER_SECOND = 20
ITEMS = 300
SETTLE_S = 60.0


async def _ready(port: int, http: httpx.AsyncClient) -> bool:
    try:
        answer = await http.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


async def test_three_replicas_of_one_oauth_application_stay_ready_and_apply_everything_once(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    topology = unique_topology()
    client_id = f"local.replicas{uuid.uuid4().hex[:8]}.00000001"
    options = ["--access-token-ttl-s", str(ACCESS_TOKEN_TTL_S), "--client-id", client_id]
    with sandbox_process(seed_items=ITEMS, latency_ms=20, options=options) as portal:
        origin = f"http://127.0.0.1:{portal.port}"
        first = (await asyncio.to_thread(httpx.post, f"{portal.control_url}/oauth/tokens")).json()
        env = worker_env(
            amqp_url,
            portal.webhook_url,
            topology,
            LIMITER_URL=redis_url,
            B24_PORTAL_URL=origin,
            B24_CLIENT_ID=client_id,
            B24_CLIENT_SECRET=SandboxConfig().client_secret,
            B24_REFRESH_TOKEN=first["refresh_token"],
            B24_OAUTH_TOKEN_URL=f"{origin}/oauth/token/",
            BATCH_SIZE="10",
        )
        del env["B24_WEBHOOK_URL"]
        ports = [free_port() for _ in range(REPLICAS)]
        async with connected(amqp_url, topology) as broker, httpx.AsyncClient() as http:
            with worker_run(env, tmp_path) as run:
                for port in ports:
                    run.start(HTTP_PORT=str(port))
                deadline = time.monotonic() + 30
                while not all([await _ready(port, http) for port in ports]):
                    assert time.monotonic() < deadline, "the replicas did not become ready"
                    await asyncio.sleep(0.1)

                not_ready: list[tuple[int, float]] = []

                async def watch(stop: asyncio.Event) -> None:
                    while not stop.is_set():
                        for index, port in enumerate(ports):
                            if not await _ready(port, http):
                                not_ready.append((index + 1, time.monotonic()))
                        await asyncio.sleep(0.2)

                stop = asyncio.Event()
                watcher = asyncio.ensure_future(watch(stop))
                started = time.monotonic()
                sent = await _steady_traffic(broker, topology.update_queue)
                events = await _outcomes(broker, topology.result_queue, len(sent))
                elapsed = time.monotonic() - started
                stop.set()
                await watcher
                run.read_logs()
                assert [p.poll() for p in run.processes] == [None] * REPLICAS
                logs = [log.text() for log in run.logs]
        counters = portal.counters()

    # Every replica stayed ready and none had its credentials refused.
    assert not_ready == []
    for number, text in enumerate(logs, start=1):
        assert "bad_credentials" not in text, f"replica {number}"
        assert "portal.down" not in text, f"replica {number}"
    # Each replica did part of the work.
    assert all(log.settled() for log in run.logs)
    # Every command succeeded once, and was applied once.
    outcomes = {event["messageId"]: event["status"] for event in events}
    assert len(events) == len(sent)
    assert outcomes == dict.fromkeys(sent, "succeeded")
    assert counters["saves"] == len(sent)
    assert counters["errors"].get("expired_token", 0) > 0  # tokens really expired meanwhile
    # The replicas took turns: about one refresh per token life, not one per replica.
    redis = Redis.from_url(redis_url)
    key = f"b24-worker:oauth:127.0.0.1:{client_id}"
    raw = await redis.get(key)
    await redis.delete(key)
    await redis.aclose()
    assert raw is not None
    refreshes = StoredToken.from_json(raw).version
    print(f"{refreshes} refreshes in {elapsed:.0f} s, {len(sent)} commands")
    assert refreshes <= 1.5 * elapsed / ACCESS_TOKEN_TTL_S + 3, refreshes


async def _steady_traffic(broker: aio_pika.abc.AbstractRobustConnection, queue: str) -> list[str]:
    """PER_SECOND commands a second for TRAFFIC_S, each a new title for one of ITEMS deals."""
    sent: list[str] = []
    start = time.monotonic()
    for second in range(int(TRAFFIC_S)):
        if (wait := start + second - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        numbers = range(second * PER_SECOND, (second + 1) * PER_SECOND)
        commands = [
            (
                f"replicas-{n}",
                {"entityTypeId": 2, "id": n % ITEMS + 1, "fields": {"title": f"t{n}"}},
            )
            for n in numbers
        ]
        await publish_all(broker, queue, commands)
        sent += [message_id for message_id, _ in commands]
    return sent


async def _outcomes(
    broker: aio_pika.abc.AbstractRobustConnection, queue: str, wanted: int
) -> list[dict[str, Any]]:
    """The events on the result queue, waiting up to SETTLE_S for ``wanted`` of them."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + SETTLE_S
    while len(events) < wanted and time.monotonic() < deadline:
        events += [json.loads(message.body) for message in await drain(broker, queue)]
        await asyncio.sleep(0.2)
    return events
