"""The helpers that start a portal for other test suites."""

from __future__ import annotations

import httpx
import pytest

from sandbox import ManualClock, SandboxConfig, running_sandbox

pytestmark = pytest.mark.sandbox


async def test_running_sandbox_serves_async_clients_and_stops() -> None:
    clock = ManualClock()
    async with running_sandbox(SandboxConfig(seed_items=1), clock=clock) as portal:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                portal.webhook_url + "crm.item.get", json={"entityTypeId": 2, "id": 1}
            )
        assert response.json()["time"]["start"] == clock.time()
        assert portal.state.counters.requests == 1
        assert portal.control_url.endswith("/_sandbox")
        url = portal.base_url
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url + "/_sandbox/")


async def test_two_portals_are_independent() -> None:
    async with (
        running_sandbox(SandboxConfig(seed_items=1)) as first,
        running_sandbox(SandboxConfig(seed_items=2)) as second,
    ):
        assert first.base_url != second.base_url
        assert first.state.store.count(2) == 1
        assert second.state.store.count(2) == 2
