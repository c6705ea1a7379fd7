"""Shared fixtures: the broker at AMQP_URL, never skipped in CI.

Tests marked `rabbitmq` get the broker at AMQP_URL. Where it does not answer
and a Docker engine runs, a RabbitMQ container is started instead; in CI
(CI=true) a missing broker fails the run rather than skipping the tests.
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

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _docker_runs() -> bool:
    return shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock")


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
    if answers(url):
        _CONTROL[:] = [_local_control(url)]
        yield url
        return
    if _docker_runs():
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
    if in_ci():
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


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis at REDIS_URL (this kind of machine runs one on 127.0.0.1:6379)."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 3) as s:
            s.sendall(b"PING\r\n")
            answered = s.recv(7).startswith(b"+PONG")
    except OSError:
        answered = False
    if answered:
        return url
    message = f"no Redis answers at {parts.hostname}:{parts.port}"
    if in_ci():
        pytest.fail(message + "; .ci/run should have started one")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _services_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("rabbitmq"):
        request.getfixturevalue("amqp_url")
    if request.node.get_closest_marker("redis"):
        request.getfixturevalue("redis_url")
