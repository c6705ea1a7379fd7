"""Which broker and Redis the tests use: the ones that answer at AMQP_URL and
REDIS_URL; where none answers and a Docker engine runs, containers started by
testcontainers; otherwise the tests that need one are skipped, or fail in CI.

The choice is a pure function (`choose`), unit-tested in tests/test_services.py,
since this machine has no Docker engine to exercise the container path."""

from __future__ import annotations

import os
import shutil
from typing import Literal

__all__ = ["Choice", "choose", "docker_runs"]

Choice = Literal["local", "container", "skip", "fail"]


def docker_runs() -> bool:
    """A Docker engine this process can reach (its socket, or DOCKER_HOST)."""
    if os.environ.get("DOCKER_HOST"):
        return True
    return shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock")


def choose(*, answers: bool, docker: bool, ci: bool) -> Choice:
    """``local`` when the service answers, ``container`` when it does not and Docker
    runs; else ``fail`` in CI (where .ci/run starts the services) and ``skip`` elsewhere."""
    if answers:
        return "local"
    if docker:
        return "container"
    return "fail" if ci else "skip"
