"""A lane lets go of its portal's connections once they sit idle past their expiry:
a portal done with its calls holds no file descriptor for good."""

from __future__ import annotations

import asyncio

import pytest

from tests.worker.bitrix.localserver import idle_connections
from tests.worker.runtime.test_lanes import FakePipeline
from worker.runtime import lanes
from worker.runtime.lanes import Lane
from worker.settings import Settings

EXPIRY_S = 0.2


async def test_an_idle_lane_closes_its_connections_after_their_keep_alive_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes, "KEEPALIVE_EXPIRY_S", EXPIRY_S)
    settings = Settings(B24_WEBHOOK_URL="https://p.example.com/rest/1/c0de99/")
    portal = next(iter(settings.portals().values()))
    async with idle_connections(2, expiry_s=EXPIRY_S) as (server, http, client):
        lane = Lane(portal, FakePipeline(), None, http)  # type: ignore[arg-type]
        running = asyncio.create_task(lane.run())
        try:
            async with asyncio.timeout(5.0):
                for _ in range(2):
                    await server.closed.get()  # no call came: the lane closed them
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        # The client still works: the pool opens a new connection.
        assert (await client.call("crm.item.get", {"id": 3})).result is True
        assert server.opened == 3
