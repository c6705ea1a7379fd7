"""A lane retired at run time (its portal removed from the registry): nothing more is
sent, and nothing it held fails; each command goes back where it came from."""

from __future__ import annotations

from tests.worker.flow.memory import TOPOLOGY, MemoryFlow, deal
from tests.worker.flow.test_pipeline import applied


async def test_what_a_retired_lane_held_goes_back_where_it_came_from() -> None:
    flow = MemoryFlow(applied)
    flow.limiter.open.clear()  # the portal's bucket is empty: everything waits
    async with flow.running():
        await flow.deliver(deal(1, "own queue"), message_id="a")
        await flow.deliver(deal(1, "behind it"), message_id="b")  # waits for item 1
        await flow.deliver(deal(2, "a retry copy"), message_id="c", source="retry")
        await flow.pipeline.retire()
        # Delivered while the lane is being dropped: handed on as well.
        await flow.deliver(deal(3, "late"), message_id="d")
        await flow.deliver(deal(4, "late copy"), message_id="e", source="retry")
        flow.limiter.open.set()
        await flow.acks.flush()
    assert flow.caller.calls == []
    assert flow.consumption.history == ["hold acme"]  # its own queue's channel given back
    assert flow.events("results") == []
    assert flow.events("dead") == []
    # Commands of the shared queue go back to it; retry copies round their tier again.
    assert [flow.channel.message_ids[tag] for tag in flow.channel.nacked] == ["a", "b", "d"]
    tiers = [name for name, _, _ in flow.publisher.published]
    assert len(tiers) == 2
    assert set(tiers) <= {TOPOLOGY.tier_queue(delay) for delay in TOPOLOGY.retry_delays_s}
    assert {flow.channel.message_ids[tag] for tag in flow.channel.acked} == {"c", "e"}
