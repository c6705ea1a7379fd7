"""Secrets never leave the worker, messages cannot carry a portal or credentials,
plain http is opt-in, and batch reference syntax in values reaches the portal as sent.

The full-worker scenarios run `b24-worker run` as a process with a webhook code,
an OAuth application and a broker password of their own, drive it through
successes, failures, a portal-wide state and a crash, run the CLI beside it, and
then search everything printed and every event published for those secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.conftest import BrokerControl
from tests.env import clean_env
from tests.worker.broker import connected, drain, publish, take, unique_topology
from tests.worker.e2e import (
    control,
    events,
    eventually,
    force_error,
    running_worker,
    settings_for,
    stored,
)
from worker.amqp.topology import Topology

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.reliability]

# A call that raises with both credentials in its message: a traceback that
# would print them unless the log mask catches them.
CRASHING_WORKER = """
import os, sys
from worker.flow import calling

call = calling.Caller._call

async def exploding(self, jobs, *args, **kwargs):
    if any(b"explode" in job.message.body for job in jobs):
        where = os.environ.get("B24_WEBHOOK_URL") or os.environ["B24_CLIENT_SECRET"]
        raise RuntimeError(f"cannot call {where} via {os.environ['AMQP_URL']}")
    return await call(self, jobs, *args, **kwargs)

calling.Caller._call = exploding
from worker.cli import main
sys.exit(main(["run"]))
"""


def deal(item_id: int, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": fields}


@pytest.fixture
def broker_password(amqp_url: str, broker_control: BrokerControl) -> Iterator[tuple[str, str]]:
    """A broker user of its own with a long random password: (its AMQP URL, the password)."""
    # Never starting with "-": rabbitmqctl would read such a password as an option
    # (token_urlsafe starts one in 64 with it). "-" and "_" stay inside it.
    user, password = f"sec-{secrets.token_hex(4)}", "pw" + secrets.token_urlsafe(32)
    broker_control.rabbitmqctl("add_user", user, password)
    try:
        broker_control.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        parts = urlsplit(amqp_url)
        netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
        yield urlunsplit((parts.scheme, netloc, parts.path or "/", "", "")), password
    finally:
        broker_control.rabbitmqctl("delete_user", user)


def worker_env(amqp_url: str, topology: Topology, **more: str) -> dict[str, str]:
    env = clean_env()
    env.update(
        AMQP_URL=amqp_url,
        UPDATE_QUEUE=topology.update_queue,
        RESULT_QUEUE=topology.result_queue,
        DEAD_LETTER_QUEUE=topology.dead_letter_queue,
        RETRY_DELAYS_S="1",
        MAX_ATTEMPTS="2",
        HTTP_PORT="0",
        BATCH_LINGER_MS="20",
        LOG_LEVEL="DEBUG",
    )
    env.update(more)
    return env


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str], log: Path) -> AsyncIterator[None]:
    """The worker (with one crashing dispatch) as a process; its output to `log`."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CRASHING_WORKER, stdout=out, stderr=out, env=env
        )
        try:
            await eventually(lambda: b'"worker.started"' in _read(log), 30)
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 40)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
    printed = _read(log)
    assert process.returncode == 0, printed[-3000:]
    assert b'"worker.stopped"' in printed


def _read(path: Path) -> bytes:
    return path.read_bytes()


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "worker", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


async def everything_queued(amqp_url: str, topology: Topology) -> list[bytes]:
    """Every message left on every queue of the topology."""
    bodies: list[bytes] = []
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        for queue in topology.queues():
            bodies += [message.body for message in await drain(connection, queue)]
    finally:
        await connection.close()
    return bodies


def assert_nothing_leaks(seen: list[bytes], secrets_: dict[str, str]) -> None:
    for name, secret in secrets_.items():
        assert len(secret) >= 16, name
        for spelling in {secret, json.dumps(secret)[1:-1]}:
            for text in seen:
                at = text.find(spelling.encode())
                assert at < 0, f"the {name} leaked after {text[max(0, at - 120) : at]!r}"


async def drive(broker: Any, portal: RunningSandbox, topology: Topology) -> list[dict[str, Any]]:
    """Success, validation failure, not found, transient, then a crash: each one's event.

    The crash comes alone: a dispatch that raises hands back its whole batch."""
    queue = topology.update_queue
    force_error(portal, "INTERNAL_SERVER_ERROR", item_id=3)
    await publish(broker, queue, deal(1, title="fine"), message_id="ok")
    await publish(broker, queue, deal(2, opened=1), message_id="invalid")
    await publish(broker, queue, deal(999, title="nobody"), message_id="missing")
    await publish(broker, queue, deal(3, title="flaky"), message_id="transient")
    got = events(await take(broker, topology.result_queue, 1))
    got += events(await take(broker, topology.dead_letter_queue, 3, timeout_s=40))
    await publish(broker, queue, deal(4, title="explode"), message_id="crash")
    got += events(await take(broker, topology.dead_letter_queue, 1, timeout_s=40))
    outcome = {e["messageId"]: e.get("error", {}).get("code", e["status"]) for e in got}
    assert outcome == {
        "ok": "succeeded",
        "invalid": "VALIDATION",
        "missing": "NOT_FOUND",
        "transient": "ATTEMPTS_EXHAUSTED",
        "crash": "DELIVERY_LIMIT",
    }
    return got


async def portal_outage(broker: Any, portal: RunningSandbox, topology: Topology, log: Path) -> Any:
    """The portal refuses the credentials for a while: the worker stops, then goes on."""
    control(portal, "PATCH", "faults", {"no_auth": True})
    await publish(broker, topology.update_queue, deal(5, title="after"), message_id="later")
    await eventually(lambda: b'"portal.down"' in _read(log), 20)
    control(portal, "PATCH", "faults", {"no_auth": False})
    [event] = events(await take(broker, topology.result_queue, 1, timeout_s=40))
    assert (event["messageId"], event["status"]) == ("later", "succeeded")
    assert stored(portal, 2, 5)["title"] == "after"
    return event


async def test_a_webhook_worker_never_prints_or_publishes_its_webhook_code_or_broker_password(
    amqp_url: str, broker_password: tuple[str, str], tmp_path: Path
) -> None:
    code = secrets.token_hex(20)
    secret_url, password = broker_password
    config = SandboxConfig(seed_items=10, limits_enabled=False, webhook_code=code)
    topology = unique_topology(retry_delays_s=(1,))
    log = tmp_path / "worker.log"
    seen: list[bytes] = []
    async with running_sandbox(config) as portal, connected(amqp_url, topology) as broker:
        env = worker_env(secret_url, topology, B24_WEBHOOK_URL=portal.webhook_url)
        async with worker_process(env, log):
            seen += [json.dumps(e).encode() for e in await drive(broker, portal, topology)]
            seen.append(json.dumps(await portal_outage(broker, portal, topology, log)).encode())
            status, checked = cli(env, "check")
            assert status == 0, checked
            control(portal, "PATCH", "faults", {"no_auth": True})
            status, refused = cli(env, "check")
            assert status == 1, refused
            assert "PROBLEM portal" in refused
            control(portal, "PATCH", "faults", {"no_auth": False})
        wrong = {**env, "AMQP_URL": secret_url.replace(password, password[::-1])}
        status, unreachable = cli(wrong, "check")
        assert status == 1, unreachable
        status, validated = cli(env, "validate", "-", stdin=json.dumps(deal(1, opened=1)) + "\n")
        assert (status, "INVALID fields.opened" in validated) == (1, True)
        seen += [checked.encode(), refused.encode(), unreachable.encode(), validated.encode()]
        seen += await everything_queued(amqp_url, topology)
    output = _read(log)
    assert b'"accept.crashed"' in output or b'"dispatch.crashed"' in output
    assert b"Traceback" in output
    assert b"cannot call" in output  # the crash's own message was printed, masked
    seen.append(output)
    assert_nothing_leaks(
        seen, {"webhook code": code, "broker password": password, "wrong password": password[::-1]}
    )


async def test_an_oauth_worker_never_prints_or_publishes_its_secret_or_tokens(
    amqp_url: str, broker_password: tuple[str, str], tmp_path: Path
) -> None:
    client_secret = secrets.token_hex(24)
    secret_url, password = broker_password
    config = SandboxConfig(
        seed_items=10, limits_enabled=False, client_secret=client_secret, access_token_ttl_s=3
    )
    topology = unique_topology(retry_delays_s=(1,))
    log = tmp_path / "worker.log"
    seen: list[bytes] = []
    issued: list[str] = []
    async with running_sandbox(config) as portal, connected(amqp_url, topology) as broker:
        issue = portal.state.tokens.issue

        def recording(user_id: int, endpoint: str) -> dict[str, Any]:
            grant = issue(user_id, endpoint)
            issued.extend([grant["access_token"], grant["refresh_token"]])
            return grant

        portal.state.tokens.issue = recording  # type: ignore[method-assign]
        first = control(portal, "POST", "oauth/tokens")
        env = worker_env(
            secret_url,
            topology,
            B24_PORTAL_URL=portal.base_url,
            B24_CLIENT_ID=config.client_id,
            B24_CLIENT_SECRET=client_secret,
            B24_REFRESH_TOKEN=first["refresh_token"],
            B24_OAUTH_TOKEN_URL=portal.token_url,
            B24_TOKEN_FILE=str(tmp_path / "token.json"),
        )
        async with worker_process(env, log):
            seen += [json.dumps(e).encode() for e in await drive(broker, portal, topology)]
            await asyncio.sleep(3.5)  # the access token expires: the next call renews it
            await publish(broker, topology.update_queue, deal(6, title="renewed"))
            seen += [m.body for m in await take(broker, topology.result_queue, 1)]
            assert stored(portal, 2, 6)["title"] == "renewed"
            seen.append(json.dumps(await portal_outage(broker, portal, topology, log)).encode())
            status, checked = cli(env, "check")
            assert status == 0, checked
        seen.append(checked.encode())
        seen += await everything_queued(amqp_url, topology)
    output = _read(log)
    assert b"Traceback" in output
    assert b"cannot call" in output
    seen.append(output)
    assert len(issued) >= 6  # the first pair, the worker's renewals, the check's
    tokens = {f"token {i}": token for i, token in enumerate(issued)}
    assert_nothing_leaks(
        seen, {"client secret": client_secret, "broker password": password, **tokens}
    )


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=10, limits_enabled=False)) as running:
        yield running


async def test_a_message_carrying_a_portal_or_credentials_is_refused_without_echoing_them(
    amqp_url: str, portal: RunningSandbox
) -> None:
    carried = {
        "auth": "4f6d0a1c2b3e4f5a6b7c8d9e0f1a2b3c",
        "access_token": "4f6d0a1c2b3e4f5a6b7c8d9e0f1a2b3c",
        "client_secret": "4f6d0a1c2b3e4f5a6b7c8d9e0f1a2b3c",
        "webhook": "https://evil.example.com/rest/1/4f6d0a1c2b3e4f5a6b7c8d9e0f1a2b3c/",
        "B24_WEBHOOK_URL": "https://evil.example.com/rest/1/4f6d0a1c2b3e4f5a6b7c8d9e0f1a2b3c/",
        "domain": "evil.example.com",
        "portal": "https://evil.example.com",
        "server_endpoint": "https://evil.example.com/oauth/rest/",
    }
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        for key, value in carried.items():
            body = {**deal(1, title="hijacked"), key: value}
            await publish(broker, settings.UPDATE_QUEUE, body, message_id=key)
        dead = events(await take(broker, settings.DEAD_LETTER_QUEUE, len(carried)))
        assert await drain(broker, settings.RESULT_QUEUE) == []
    assert sorted(e["messageId"] for e in dead) == sorted(carried)
    for event in dead:
        reason = event["error"]["description"]
        assert event["error"]["class"] == "validation"
        assert reason.startswith(f"{event['messageId']}: unexpected key"), reason
        assert "credentials come from the worker's configuration" in reason
        assert "4f6d0a1c" not in reason
        assert "evil.example.com" not in reason
    assert stored(portal, 2, 1)["title"] != "hijacked"
    assert control(portal, "GET", "counters")["calls"].get("crm.item.update", 0) == 0


@pytest.mark.parametrize(
    "portal_env",
    [
        {"B24_WEBHOOK_URL": "http://portal.example.com/rest/1/{code}/"},
        {
            "B24_PORTAL_URL": "http://10.20.30.40",
            "B24_CLIENT_ID": "local.app",
            "B24_CLIENT_SECRET": "{code}",
            "B24_REFRESH_TOKEN": "{code}",
        },
    ],
    ids=["webhook", "oauth"],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_refused_at_start_unless_allowed(
    portal_env: dict[str, str],
) -> None:
    code = secrets.token_hex(16)
    variables = {name: value.format(code=code) for name, value in portal_env.items()}
    name = next(iter(variables))
    env = {
        **worker_env("amqp://app:Br0kerPassw0rd99@127.0.0.1:1/", unique_topology()),
        **variables,
    }
    refused = subprocess.run(
        [sys.executable, "-m", "worker", "run"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode == 2, refused.stderr
    assert f"{name} uses plain http" in refused.stderr
    assert "B24_ALLOW_HTTP=true" in refused.stderr
    allowed = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        capture_output=True,
        text=True,
        env={**env, "B24_ALLOW_HTTP": "true"},
        timeout=60,
    )
    # Past the settings: it stops at the broker, which does not answer on port 1.
    assert allowed.returncode == 1, allowed.stdout + allowed.stderr
    assert '"broker.unreachable"' in allowed.stdout
    for text in (refused.stdout + refused.stderr, allowed.stdout + allowed.stderr):
        assert code not in text
        assert "Br0kerPassw0rd99" not in text


REFERENCES = [
    "pay $result[c0]",
    "$result[c0][id]",
    "$RESULT[x]",
    "$next",
    "$next[c1]",
    "$total[c0]",
    "$time[c0][start]",
    "$error[c0]",
    "cost: $result[c0] & a=b",
]


async def test_batch_references_in_values_reach_the_portal_unchanged(
    amqp_url: str, portal: RunningSandbox
) -> None:
    """Sent among plain commands that do travel in a batch, where the portal would
    rewrite them: every value is stored exactly as it was sent."""
    settings = settings_for(amqp_url, portal, BATCH_LINGER_MS=200)
    tags = "ufCrm_1721244707202"
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        for item_id, text in enumerate(REFERENCES, start=1):
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id, title="plain"))
            fields = {"title": text, "comments": text, tags: [text, "$next"]}
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id, **fields))
        done = events(await take(broker, settings.RESULT_QUEUE, 2 * len(REFERENCES)))
        assert await drain(broker, settings.DEAD_LETTER_QUEUE) == []
    assert all(e["status"] == "succeeded" and e["notApplied"] == [] for e in done)
    for item_id, text in enumerate(REFERENCES, start=1):
        item = stored(portal, 2, item_id)
        assert (item["title"], item["comments"], item[tags]) == (text, text, [text, "$next"])
    assert control(portal, "GET", "counters")["calls"].get("batch", 0) >= 1
