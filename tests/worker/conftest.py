"""Fixtures shared by the worker's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from worker.bitrix import BitrixClient, WebhookAuth, make_http_client


@pytest.fixture
async def client(portal: RunningSandbox) -> AsyncIterator[BitrixClient]:
    """A webhook client for the module's `portal`, reset to its seed data first."""
    async with make_http_client(timeout_s=5.0) as http:
        reset = await http.post(portal.control_url + "/reset", json={})
        assert reset.status_code == 200
        yield BitrixClient(http=http, auth=WebhookAuth(portal.webhook_url))


# Two portals side by side, limits off, ten deals each: for the tests of several portals.
TWO_PORTALS_SEED = 10


@pytest.fixture
async def north() -> AsyncIterator[RunningSandbox]:
    config = SandboxConfig(seed_items=TWO_PORTALS_SEED, limits_enabled=False)
    async with running_sandbox(config) as running:
        yield running


@pytest.fixture
async def south() -> AsyncIterator[RunningSandbox]:
    config = SandboxConfig(seed_items=TWO_PORTALS_SEED, limits_enabled=False)
    async with running_sandbox(config) as running:
        yield running
