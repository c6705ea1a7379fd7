"""Shared fixtures: the broker at AMQP_URL and Redis at REDIS_URL, never skipped in CI.

Tests marked `rabbitmq` get the broker at AMQP_URL, tests marked `redis` the
Redis at REDIS_URL. Where one does not answer and a Docker engine runs, a
container is started instead (testcontainers: RabbitMQ, Redis); in CI (CI=true)
a missing service fails the run rather than skipping the tests
(tests/services.py decides).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from scripts.amqp_ping import answers
from tests.services import choose, docker_runs

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

# A developer's .env in the checkout is for their worker, not for the tests (nor for
# the processes they start): the settings read none unless a test names one.
os.environ["ENV_FILE"] = ""


def in_ci() -> bool:
    """CI is on when CI is set to anything but an empty, false or 0 value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class BrokerControl:
    """`rabbitmqctl` on the node the tests' broker runs on (None when that cannot be)."""

    run: Callable[[list[str]], subprocess.CompletedProcess[str]] | None
    why_not: str = ""

    def rabbitmqctl(self, *args: str) -> str:
        """Run it; RuntimeError with its output when it fails."""
        if self.run is None:
            raise RuntimeError(self.why_not)
        done = self.run(["rabbitmqctl", *args])
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()


_CONTROL: list[BrokerControl] = []


def _local_control(url: str) -> BrokerControl:
    host = urlsplit(url).hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        return BrokerControl(None, f"the broker at AMQP_URL ({host}) is not this machine's")
    if shutil.which("rabbitmqctl") is None:
        return BrokerControl(None, "rabbitmqctl is not on this machine")

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    return BrokerControl(run)


def _container_control(container: Any) -> BrokerControl:
    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        code, output = container.exec(command)
        text = output.decode() if isinstance(output, bytes) else str(output)
        return subprocess.CompletedProcess(command, code, text, text)

    return BrokerControl(run)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    chosen = choose(answers=answers(url), docker=docker_runs(), ci=in_ci())
    if chosen == "local":
        _CONTROL[:] = [_local_control(url)]
        yield url
        return
    if chosen == "container":
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            # Sharded topologies need the consistent-hash exchange type.
            container.exec(["rabbitmq-plugins", "enable", "rabbitmq_consistent_hash_exchange"])
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            _CONTROL[:] = [_container_control(container)]
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    message = f"no AMQP broker answers at AMQP_URL and no Docker engine runs ({url.split('@')[-1]})"
    if chosen == "fail":
        pytest.fail(message + "; .ci/run should have started one")
    pytest.skip(message)


@pytest.fixture
def broker_control(amqp_url: str) -> BrokerControl:
    """rabbitmqctl on the broker the tests use: the local node when AMQP_URL is on this
    machine, the container's when testcontainers started one. Elsewhere the test that
    needs it is skipped, or fails in CI."""
    control = _CONTROL[0]
    if control.run is None:
        if in_ci():
            pytest.fail(control.why_not)
        pytest.skip(control.why_not)
    return control


def _redis_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 3) as s:
            s.sendall(b"PING\r\n")
            return s.recv(7).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Redis at REDIS_URL (this kind of machine runs one on 127.0.0.1:6379); where none
    answers and Docker runs, a container's."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    chosen = choose(answers=_redis_answers(url), docker=docker_runs(), ci=in_ci())
    if chosen == "local":
        yield url
        return
    if chosen == "container":
        from testcontainers.community.redis import RedisContainer

        with RedisContainer("redis:7.2-alpine") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/15"
        return
    parts = urlsplit(url)
    message = f"no Redis answers at {parts.hostname}:{parts.port} and no Docker engine runs"
    if chosen == "fail":
        pytest.fail(message + "; .ci/run should have started one")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _services_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("rabbitmq"):
        request.getfixturevalue("amqp_url")
    if request.node.get_closest_marker("redis"):
        request.getfixturevalue("redis_url")
