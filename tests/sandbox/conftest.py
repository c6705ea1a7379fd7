"""One sandbox portal per test session (limits off, time frozen), reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.clock import ManualClock
from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, serve_in_thread
from tests.sandbox.client import SandboxClient

SHARED_CONFIG = SandboxConfig(seed_items=3, limits_enabled=False, random_seed=7)


@pytest.fixture(scope="session")
def shared_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def shared_portal(shared_clock: ManualClock) -> Iterator[RunningSandbox]:
    with serve_in_thread(SHARED_CONFIG, clock=shared_clock) as portal:
        yield portal


@pytest.fixture
def b24(shared_portal: RunningSandbox) -> Iterator[SandboxClient]:
    """A client of the shared portal, freshly reset (data, counters, faults, limits)."""
    client = SandboxClient(shared_portal)
    client.reset()
    yield client
    client.close()
