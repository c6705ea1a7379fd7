"""The worker's life end to end: stopping mid-run, OAuth over token expiry,
the probes and metrics, and the message id a retry copy carries.

Each test uses the real broker and a real sandbox portal, on queues of its own.
Where the worker runs as users run it (`python -m worker run`), it is a
subprocess stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import (
    connected,
    depth,
    drain,
    publish,
    publish_all,
    take,
    unique_topology,
)
from tests.worker.e2e import control, events, process_env, running_worker, settings_for
from worker.amqp.topology import Topology, declare

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

ROOT = Path(__file__).resolve().parents[2]

# The drain the subprocess is given, and the slack allowed on top of it to exit.
DRAIN_TIMEOUT_S = 5
EXIT_SLACK_S = 5


def deal(item_id: int, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": fields}


def delays_of(topology: Topology) -> str:
    return ",".join(str(delay) for delay in topology.retry_delays_s)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_env(
    amqp_url: str, portal: RunningSandbox, topology: Topology, **extra: str
) -> dict[str, str]:
    """The environment of `python -m worker run`: this test's broker, portal and queues."""
    return process_env(
        amqp_url, portal.webhook_url, topology, DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S), **extra
    )


@contextmanager
def worker_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m worker run`, its output in `log_path`; stopped by its PID if still running."""
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=DRAIN_TIMEOUT_S + EXIT_SLACK_S)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()


def log_records(log_path: Path) -> list[dict[str, Any]]:
    records = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# 1. SIGTERM in the middle of a busy run -------------------------------------------------

COMMANDS = 300
BATCH_SIZE = 10


async def test_sigterm_mid_run_drains_and_a_second_worker_finishes_without_loss(
    amqp_url: str, tmp_path: Path
) -> None:
    config = SandboxConfig(seed_items=COMMANDS, limits_enabled=False, latency_ms=200)
    topology = unique_topology()
    commands = [(f"m-{i}", deal(i, title=f"run-{i}")) for i in range(1, COMMANDS + 1)]
    async with running_sandbox(config) as portal, connected(amqp_url, topology) as broker:
        await declare(broker, topology)
        await publish_all(broker, topology.update_queue, commands)
        env = worker_env(amqp_url, portal, topology, BATCH_SIZE=str(BATCH_SIZE))
        log_path = tmp_path / "first-worker.log"
        with worker_process(env, log_path) as first:

            async def some_succeeded() -> bool:
                assert first.poll() is None, log_path.read_text()
                return await depth(broker, topology.result_queue) >= 3 * BATCH_SIZE

            await wait_until(some_succeeded, timeout_s=30)
            os.kill(first.pid, signal.SIGTERM)
            stopped_at = time.monotonic()
            code = await asyncio.to_thread(first.wait, DRAIN_TIMEOUT_S + EXIT_SLACK_S)
            took_s = time.monotonic() - stopped_at
        assert code == 0, log_path.read_text()
        assert took_s < DRAIN_TIMEOUT_S + EXIT_SLACK_S
        records = log_records(log_path)
        assert any(r.get("event") == "worker.stopped" for r in records)
        ended = {r["message_id"] for r in records if r.get("outcome") == "succeeded"}
        assert len(ended) < COMMANDS, "the run ended before SIGTERM: nothing was left"

        control(portal, "PATCH", "faults", {"latency_ms": 0})
        settings = settings_for(
            amqp_url,
            portal,
            UPDATE_QUEUE=topology.update_queue,
            RESULT_QUEUE=topology.result_queue,
            DEAD_LETTER_QUEUE=topology.dead_letter_queue,
            RETRY_DELAYS_S=delays_of(topology),
        )
        async with running_worker(settings):

            async def all_ended() -> bool:
                return (
                    await depth(broker, topology.result_queue) >= COMMANDS
                    and await depth(broker, topology.update_queue) == 0
                    and await depth(broker, topology.retry_queue) == 0
                )

            await wait_until(all_ended, timeout_s=30)
        done = events(await drain(broker, topology.result_queue))
        dead = await drain(broker, topology.dead_letter_queue)
        remaining = await drain(broker, topology.update_queue)
        items = control(portal, "GET", "items/2")

    assert all(event["status"] == "succeeded" for event in done)
    successes = Counter(event["messageId"] for event in done)
    assert set(successes) == {message_id for message_id, _ in commands}
    # The drain let every call out end and acked it before closing (README: a SIGTERM
    # makes no duplicates); what it held went back unacked and was applied once.
    assert {message_id: n for message_id, n in successes.items() if n > 1} == {}
    assert dead == []
    assert remaining == []
    titles = {item["id"]: item["title"] for item in items}
    assert all(titles[i] == f"run-{i}" for i in range(1, COMMANDS + 1))


# 2. OAuth over several access-token lifetimes ------------------------------------------

ACCESS_TOKEN_TTL_S = 2.0


async def test_oauth_tokens_are_refreshed_as_they_expire_and_the_rotated_one_is_kept(
    amqp_url: str, tmp_path: Path
) -> None:
    config = SandboxConfig(
        seed_items=5, limits_enabled=False, access_token_ttl_s=ACCESS_TOKEN_TTL_S
    )
    async with running_sandbox(config) as portal:
        first_refresh = control(portal, "POST", "oauth/tokens")["refresh_token"]
        token_file = tmp_path / "oauth-token.json"
        settings = settings_for(
            amqp_url,
            portal,
            B24_WEBHOOK_URL=None,
            B24_PORTAL_URL=portal.base_url,
            B24_CLIENT_ID=config.client_id,
            B24_CLIENT_SECRET=config.client_secret,
            B24_REFRESH_TOKEN=first_refresh,
            B24_OAUTH_TOKEN_URL=portal.token_url,
            B24_TOKEN_FILE=str(token_file),
        )
        assert settings.B24_WEBHOOK_URL is None
        done: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
        ):
            for wave in range(5):
                for item_id in (1, 2):
                    await publish(
                        broker,
                        settings.UPDATE_QUEUE,
                        deal(item_id, title=f"wave-{wave}"),
                        message_id=f"w{wave}-{item_id}",
                    )
                done += events(await take(broker, settings.RESULT_QUEUE, 2))
                await asyncio.sleep(1.0)
            spanned_s = loop.time() - started
            dead = len(await drain(broker, settings.DEAD_LETTER_QUEUE))
        counters = control(portal, "GET", "counters")
        stored = json.loads(token_file.read_text(encoding="utf-8"))
        with httpx.Client(timeout=10) as http:

            def refresh(token: str) -> httpx.Response:
                form = {
                    "grant_type": "refresh_token",
                    "client_id": config.client_id,
                    "client_secret": config.client_secret,
                    "refresh_token": token,
                }
                return http.post(portal.token_url, data=form)

            spent = refresh(first_refresh)
            live = refresh(stored["refresh_token"])

    assert spanned_s > 2 * ACCESS_TOKEN_TTL_S
    assert sorted(event["messageId"] for event in done) == sorted(
        f"w{wave}-{item_id}" for wave in range(5) for item_id in (1, 2)
    )
    assert all(event["status"] == "succeeded" for event in done)
    assert all(event["attempts"] == 1 for event in done)  # an expired token is no attempt
    assert dead == 0
    # The access token did expire under the worker, and the worker carried on.
    assert counters["errors"].get("expired_token", 0) >= 1
    # The file keeps the newest refresh token: the first one was used up, the kept one works.
    assert stored["refresh_token"] != first_refresh
    assert (spent.status_code, spent.json()["error"]) == (400, "invalid_grant")
    assert live.status_code == 200
    assert live.json()["access_token"]


# 3. /metrics, /healthz and /readyz ----------------------------------------------------------


def metric(page: str, name: str) -> float:
    """The sum of every series of ``name`` on the page, whatever its labels."""
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", page, flags=re.MULTILINE)
    assert found, f"{name} is not on /metrics"
    return sum(float(value) for value in found)


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as running:
        yield running


async def test_probes_and_metrics_follow_the_portal_state(
    amqp_url: str, portal: RunningSandbox
) -> None:
    port = free_port()
    settings = settings_for(amqp_url, portal, HTTP_PORT=port)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):

        async def serving() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(serving, timeout_s=10)
        for item_id in (1, 2, 3):
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id, title="metered"))
        assert len(await take(broker, settings.RESULT_QUEUE, 3)) == 3

        page = (await http.get("/metrics")).text
        assert metric(page, "b24_succeeded_total") >= 3
        assert metric(page, "b24_portal_up") == 1
        assert 0 < metric(page, "process_open_fds") < metric(page, "process_max_fds")
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

        control(portal, "PATCH", "faults", {"overload": True})
        await publish(broker, settings.UPDATE_QUEUE, deal(4, title="after overload"))

        async def portal_down() -> bool:
            return metric((await http.get("/metrics")).text, "b24_portal_up") == 0

        await wait_until(portal_down, timeout_s=10)
        # /readyz is about the worker: one portal down takes no worker out of rotation.
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert (await http.get("/healthz")).status_code == 200
        assert await drain(broker, settings.DEAD_LETTER_QUEUE) == []

        control(portal, "PATCH", "faults", {"overload": False})
        [event] = events(await take(broker, settings.RESULT_QUEUE, 1, timeout_s=15))
        page = (await http.get("/metrics")).text
        dead = await drain(broker, settings.DEAD_LETTER_QUEUE)
    assert (event["id"], event["status"]) == (4, "succeeded")
    assert metric(page, "b24_succeeded_total") >= 4
    assert metric(page, "b24_portal_up") == 1
    assert dead == []


async def test_a_health_port_in_use_stops_the_start_before_anything_is_consumed(
    amqp_url: str, portal: RunningSandbox, tmp_path: Path
) -> None:
    topology = unique_topology()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - where the worker binds HTTP_PORT
        taken.listen()
        port = taken.getsockname()[1]
        async with connected(amqp_url, topology) as broker:
            await declare(broker, topology)
            await publish(broker, topology.update_queue, deal(1, title="waits"))
            env = worker_env(amqp_url, portal, topology, HTTP_PORT=str(port))
            log_path = tmp_path / "worker.log"
            with worker_process(env, log_path) as worker:
                code = await asyncio.to_thread(worker.wait, 30)
            left = await drain(broker, topology.update_queue)
            results = await drain(broker, topology.result_queue)
    assert code == 1, log_path.read_text()
    [failure] = [r for r in log_records(log_path) if r.get("event") == "http.port_unavailable"]
    assert str(port) in failure["error"]
    assert not any(r.get("event") == "broker.connected" for r in log_records(log_path))
    assert [json.loads(message.body)["fields"]["title"] for message in left] == ["waits"]
    assert results == []
    assert all(item.get("title") != "waits" for item in control(portal, "GET", "items/2"))


# 4. A retry copy keeps the message id the worker assigned ---------------------------------


async def test_a_retried_command_without_message_id_keeps_its_assigned_id(
    amqp_url: str, portal: RunningSandbox, tmp_path: Path
) -> None:
    control(
        portal,
        "PATCH",
        "faults",
        {
            "item_errors": [
                {"error": "INTERNAL_SERVER_ERROR", "entity_type_id": 2, "item_id": 2, "times": 1}
            ]
        },
    )
    topology = unique_topology()
    log_path = tmp_path / "worker.log"
    async with connected(amqp_url, topology) as broker:
        await declare(broker, topology)
        await publish(broker, topology.update_queue, deal(2, title="second try"))
        with worker_process(worker_env(amqp_url, portal, topology), log_path) as process:
            [message] = await take(broker, topology.result_queue, 1, timeout_s=20)
            os.kill(process.pid, signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, DRAIN_TIMEOUT_S + EXIT_SLACK_S)
        # The worker has stopped: whatever else it published is on the queues now.
        more = len(await drain(broker, topology.result_queue))
        dead = len(await drain(broker, topology.dead_letter_queue))
    [event] = events([message])
    assert event["status"] == "succeeded"
    assert event["attempts"] == 2
    assigned = event["messageId"]
    assert assigned
    assert message.message_id == assigned
    assert (more, dead, code) == (0, 0, 0)
    settled = [
        (record["outcome"], record["message_id"], record.get("reason"))
        for record in log_records(log_path)
        if record.get("event") == "message.settled"
    ]
    # The first try went to a delay tier under the id the worker assigned, its line
    # saying why; the copy came back and succeeded under that same id.
    assert [(outcome, message_id) for outcome, message_id, _ in settled] == [
        ("retried", assigned),
        ("succeeded", assigned),
    ]
    assert str(settled[0][2]).startswith("INTERNAL_SERVER_ERROR: ")
    assert settled[1][2] is None
