"""A portal's queue given back to the broker (a hand-over to the next worker, a portal
going down) when the broker is lost meanwhile: the hold fails, and the queue is
this worker's to consume again all the same; nothing of the portal stalls."""

from __future__ import annotations

import pytest

from tests.worker.flow.memory import MemoryConsumption, MemoryFlow, deal
from tests.worker.flow.test_pipeline import applied, blocked_until_probed


class LostHold(MemoryConsumption):
    """The connection is lost while the queue's channel closes."""

    async def hold(self, holder: str) -> None:
        await super().hold(holder)
        raise ConnectionError("connection lost")


async def test_a_hand_over_whose_hold_fails_gives_the_queue_back_to_consumption() -> None:
    flow = MemoryFlow(applied, consumption=LostHold())
    async with flow.running():
        await flow.deliver(deal(1, "v0"), message_id="a")
        await flow.until_settled(1)
        with pytest.raises(ConnectionError):
            await flow.pipeline.hand_over()
        assert flow.consumption.history == ["hold acme", "release acme"]
        assert flow.consumption.holders == set()
        # The portal still sends what comes next.
        await flow.deliver(deal(1, "v1"), message_id="b")
        await flow.until_settled(2)
    assert flow.titles() == ["v0", "v1"]


async def test_a_portal_down_whose_hold_fails_is_probed_and_resumes() -> None:
    portal, probe = blocked_until_probed(["blocked", None])
    flow = MemoryFlow(portal, probe=probe, consumption=LostHold())
    async with flow.running():
        await flow.deliver(deal(1, "v0"), message_id="a")
        await flow.until_settled(1)
    assert flow.observer.down == [("blocked", "OVERLOAD_LIMIT")]
    assert flow.observer.up == 1
    assert flow.consumption.history == ["hold acme", "release acme"]
    assert flow.titles() == ["v0"]
