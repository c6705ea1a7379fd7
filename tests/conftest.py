"""Shared fixtures: the broker at AMQP_URL, never skipped in CI.

Tests marked `rabbitmq` get the broker at AMQP_URL. Where it does not answer
and a Docker engine runs, a RabbitMQ container is started instead; in CI
(CI=true) a missing broker fails the run rather than skipping the tests.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from scripts.amqp_ping import answers

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _docker_runs() -> bool:
    return shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    if answers(url):
        yield url
        return
    if _docker_runs():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            # Sharded topologies need the consistent-hash exchange type.
            container.exec(["rabbitmq-plugins", "enable", "rabbitmq_consistent_hash_exchange"])
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    message = f"no AMQP broker answers at AMQP_URL and no Docker engine runs ({url.split('@')[-1]})"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run should have started one")
    pytest.skip(message)


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
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run should have started one")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _services_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("rabbitmq"):
        request.getfixturevalue("amqp_url")
    if request.node.get_closest_marker("redis"):
        request.getfixturevalue("redis_url")
