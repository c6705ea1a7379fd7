"""`b24-worker check`: one line per check, problems in plain words, no secrets."""

from __future__ import annotations

import json
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sandbox.testing import RunningSandbox
from tests.worker.broker import connected, unique_topology
from tests.worker.e2e import control
from tests.worker.tools.helpers import declared_topology, run_tool, tool_env
from worker.observability.health import HealthServer, InLoopServer
from worker.observability.metrics import Metrics
from worker.runtime.app import listening_socket

pytestmark = pytest.mark.rabbitmq


def webhook_code(portal: RunningSandbox) -> str:
    return portal.webhook_url.rstrip("/").rsplit("/", 1)[1]


def lines_of(stdout: str) -> dict[str, str]:
    """subject -> the line's verdict and detail."""
    found = {}
    for line in stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        subject, _, detail = rest.strip().partition(": ")
        found[subject] = f"{verdict} {detail}"
    return found


@pytest.mark.sandbox
async def test_everything_in_order_is_all_ok(amqp_url: str, portal: RunningSandbox) -> None:
    async with declared_topology(amqp_url) as (topology, _):
        env = tool_env(amqp_url, topology, B24_WEBHOOK_URL=portal.webhook_url)
        ran = await run_tool("check", env=env)
    assert ran.returncode == 0, ran.stdout
    found = lines_of(ran.stdout)
    assert all(line.startswith("OK ") for line in found.values()), ran.stdout
    assert len([s for s in found if s.startswith("queue ")]) == len(topology.queues())
    assert found[f"queue {topology.dead_letter_queue}"] == "OK quorum, as the worker needs; 0 ready"
    redacted = portal.webhook_url.replace(webhook_code(portal), "***")
    assert found["portal"].startswith(f"OK {redacted}: crm.item.fields answered (")
    assert found["open files"].startswith("OK up to ")
    assert found["open files"].endswith("1 portal may need about 86")
    assert webhook_code(portal) not in ran.stdout + ran.stderr


async def test_a_hard_limit_of_open_files_short_of_the_portals_needs_is_a_problem(
    amqp_url: str,
) -> None:
    # Forty portals at their busiest: 5 HTTP connections each, 17 AMQP connections,
    # 64 for the rest. Nothing is called: the limit is read before the portals.
    portals = {f"p{n:02d}": {"webhook_url": f"http://127.0.0.1:9/rest/1/p{n}/"} for n in range(40)}
    env = tool_env(amqp_url, B24_PORTALS=json.dumps(portals), B24_DEFAULT_PORTAL="p00")
    ran = await run_tool("check", env=env, open_files=(100, 200))
    assert ran.returncode == 1
    found = lines_of(ran.stdout)["open files"]
    assert found.startswith("PROBLEM up to 200 (the worker raises its soft limit to this hard one)")
    assert "40 portals may need about 281: raise the hard limit (LimitNOFILE" in found

    ran = await run_tool("check", env=env, open_files=(100, 4096))
    assert lines_of(ran.stdout)["open files"].startswith("OK up to 4096 ")


@pytest.mark.sandbox
async def test_bad_credentials_and_a_missing_scope_are_named(
    amqp_url: str, portal: RunningSandbox
) -> None:
    wrong = portal.webhook_url.replace(webhook_code(portal), "WrongC0de4Check")
    ran = await run_tool("check", env=tool_env(amqp_url, B24_WEBHOOK_URL=wrong))
    assert ran.returncode == 1
    assert lines_of(ran.stdout)["portal"].startswith("PROBLEM")
    assert "the portal refused the credentials (NO_AUTH_FOUND)" in ran.stdout
    assert "WrongC0de4Check" not in ran.stdout + ran.stderr

    control(portal, "PATCH", "faults", {"portal_error": "insufficient_scope"})
    ran = await run_tool("check", env=tool_env(amqp_url, B24_WEBHOOK_URL=portal.webhook_url))
    assert ran.returncode == 1
    assert "lack the crm scope (insufficient_scope)" in lines_of(ran.stdout)["portal"]


async def test_an_unreachable_portal_and_broker_are_said_without_secrets() -> None:
    ran = await run_tool(
        "check",
        env=tool_env(
            "amqp://app:Br0kerPassw0rd@127.0.0.1:1/",
            B24_WEBHOOK_URL="http://127.0.0.1:1/rest/1/Wh00kC0de4Check/",
        ),
    )
    assert ran.returncode == 1
    found = lines_of(ran.stdout)
    assert found["broker"].startswith(
        "PROBLEM cannot reach the broker at amqp://app:***@127.0.0.1:1/"
    )
    assert found["portal"] == (
        "PROBLEM unreachable: ConnectError talking to http://127.0.0.1:1/rest/1/***/"
    )
    assert ran.stderr == ""  # the libraries' own connection warnings are not repeated
    assert "Br0kerPassw0rd" not in ran.stdout + ran.stderr
    assert "Wh00kC0de4Check" not in ran.stdout + ran.stderr


async def test_plain_http_to_another_host_is_refused_by_the_settings(amqp_url: str) -> None:
    ran = await run_tool(
        "check",
        env=tool_env(amqp_url, B24_WEBHOOK_URL="http://portal.example.com/rest/1/Wh00kC0de4Check/"),
    )
    assert ran.returncode == 1
    first = ran.stdout.splitlines()[0]
    assert first.startswith(
        "PROBLEM settings: invalid configuration: B24_WEBHOOK_URL uses plain http"
    )
    assert "B24_ALLOW_HTTP" in first
    assert "Wh00kC0de4Check" not in ran.stdout + ran.stderr


async def test_a_queue_of_another_type_and_missing_queues(amqp_url: str) -> None:
    topology = unique_topology()
    async with connected(amqp_url, topology) as broker:
        channel = await broker.channel()
        await channel.declare_queue(topology.dead_letter_queue, durable=True)  # classic
        ran = await run_tool("check", env=tool_env(amqp_url, topology))
    found = lines_of(ran.stdout)
    assert ran.returncode == 1
    assert found[f"queue {topology.dead_letter_queue}"].startswith(
        "PROBLEM exists with other arguments than the worker needs (inequivalent arg 'x-queue-type'"
    )
    assert found[f"queue {topology.update_queue}"] == (
        "OK missing; the worker declares it when it starts"
    )
    assert found["portal"].startswith("PROBLEM none configured")


@pytest.mark.sandbox
async def test_every_configured_portal_is_checked_by_its_key(
    amqp_url: str, portal: RunningSandbox
) -> None:
    wrong = portal.webhook_url.replace(webhook_code(portal), "WrongC0de4Check")
    portals = json.dumps(
        {"good": {"webhook_url": portal.webhook_url}, "bad": {"webhook_url": wrong}}
    )
    async with declared_topology(amqp_url) as (topology, _):
        env = tool_env(amqp_url, topology, B24_PORTALS=portals, B24_DEFAULT_PORTAL="good")
        ran = await run_tool("check", env=env)
    assert ran.returncode == 1
    checked = [line for line in ran.stdout.splitlines() if " portal: " in line]
    assert len(checked) == 2, ran.stdout
    assert any(line.startswith("OK") and "portal: good " in line for line in checked), checked
    assert any(
        line.startswith("PROBLEM") and "portal: bad " in line and "NO_AUTH_FOUND" in line
        for line in checked
    ), checked
    assert "WrongC0de4Check" not in ran.stdout + ran.stderr
    assert webhook_code(portal) not in ran.stdout + ran.stderr


@asynccontextmanager
async def serving(server: InLoopServer, sock: socket.socket) -> AsyncIterator[None]:
    await server.start(sockets=[sock])
    try:
        yield
    finally:
        await server.stop()


async def test_a_running_worker_s_open_files_are_read_from_its_metrics(amqp_url: str) -> None:
    # Bound as the worker binds HTTP_PORT: what comes before serving waits in the backlog.
    sock = listening_socket(0, "HTTP_PORT")
    port = sock.getsockname()[1]
    env = tool_env(amqp_url, B24_WEBHOOK_URL="http://127.0.0.1:9/rest/1/abc/", HTTP_PORT=str(port))
    # The worker's own metrics server, in this process: its open files and its limit.
    health = HealthServer(port=port, metrics=Metrics(), not_ready=lambda: None)
    async with serving(health, sock):
        ran = await run_tool("check", env=env)
    found = lines_of(ran.stdout)["running worker"]
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert found.startswith(f"OK 127.0.0.1:{port} holds "), found
    assert f" of the {soft} open files it may (" in found

    async def near_the_limit(request: Request) -> PlainTextResponse:
        return PlainTextResponse("process_open_fds 900.0\nprocess_max_fds 1000.0\n")

    sock = listening_socket(0, "HTTP_PORT")
    port = sock.getsockname()[1]
    near = InLoopServer(Starlette(routes=[Route("/metrics", near_the_limit)]), port=port)
    async with serving(near, sock):
        ran = await run_tool("check", env={**env, "HTTP_PORT": str(port)})
    assert ran.returncode == 1
    assert lines_of(ran.stdout)["running worker"] == (
        f"PROBLEM 127.0.0.1:{port} holds 900 of the 1000 open files it may (90%): raise its "
        "hard limit (LimitNOFILE in a systemd unit, the container runtime's nofile ulimit) "
        "before its calls wait for a descriptor"
    )

    # Nothing answers there any more.
    ran = await run_tool("check", env={**env, "HTTP_PORT": str(port)})
    assert lines_of(ran.stdout)["running worker"] == f"OK none answers on 127.0.0.1:{port}"
