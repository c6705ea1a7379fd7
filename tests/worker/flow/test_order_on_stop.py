"""An item's commands keep their order when the worker stops or a portal goes down.

The broker gives back what a worker returns in the order it comes back, ahead of
the rest of the queue (tests/worker/amqp/test_returns.py): a command returned
before an earlier one of its item would be applied first next time. These
scripts set up the interleavings deterministically, in memory.
"""

from __future__ import annotations

import asyncio

from tests.worker.flow.memory import MemoryFlow, deal
from tests.worker.flow.test_pipeline import applied
from worker.flow.calling import Decision, PortalDown
from worker.flow.jobs import Job


def title(job: Job) -> str:
    return str(job.params["fields"]["title"])


async def test_a_drain_gives_back_an_items_later_commands_after_its_earlier_ones() -> None:
    """v1's call is out, v2 waits behind it, v3 arrives after consuming stopped (it was
    already on its way). The drain ends v1; v2 and v3 go back when the connection
    closes, v2 first. (Before, v3 was handed back at once, ahead of v2.)"""
    answer = asyncio.Event()

    async def portal(job: Job) -> Decision:
        await answer.wait()
        return applied(job)

    flow = MemoryFlow(portal)
    async with flow.running():
        await flow.deliver(deal(836, "v1"), message_id="v1")
        await flow.deliver(deal(836, "v2"), message_id="v2")
        await flow.until(lambda: flow.caller.calls == [["v1"]])
        draining = asyncio.create_task(flow.pipeline.drain())
        await flow.until(lambda: flow.pipeline.paused)
        await flow.deliver(deal(836, "v3"), message_id="v3")
        answer.set()
        await draining
        await flow.acks.flush()
        flow.channel.close()
    assert flow.titles() == ["v1"]
    assert flow.channel.redelivered_ids() == ["v2", "v3"]


async def test_while_draining_nothing_is_handed_back_one_by_one() -> None:
    """Commands queued for a call when the drain starts stay unacked; the close gives
    them back in their order with the rest."""
    flow = MemoryFlow(applied)
    flow.limiter.open.clear()
    async with flow.running():
        await flow.deliver(deal(1, "a"), message_id="a")
        await flow.deliver(deal(2, "b"), message_id="b")
        await flow.deliver(deal(1, "c"), message_id="c")
        await flow.pipeline.drain()
        flow.limiter.open.set()  # a group forms, but nothing is sent while draining
        await asyncio.sleep(0.02)
        flow.channel.close()
    assert flow.caller.calls == []
    assert flow.channel.nacked == []
    assert flow.channel.redelivered_ids() == ["a", "b", "c"]


async def test_an_outage_keeps_each_items_commands_in_their_order() -> None:
    """Item 2's call answers that the portal is blocked while item 7's v1 is still out
    (v2 behind it); then v3 of item 7 arrives. Nothing goes back to the broker, and
    once the portal answers item 7's commands are sent v1, v2, v3. (Before, v3 was
    handed back at once, ahead of v1 and v2.)"""
    late = asyncio.Event()
    up = asyncio.Event()

    first_v1 = [True]

    async def portal(job: Job) -> Decision:
        if title(job) == "v1" and first_v1[0]:
            first_v1[0] = False
            await late.wait()
            return PortalDown("blocked", "OVERLOAD_LIMIT")
        if not up.is_set():
            return PortalDown("blocked", "OVERLOAD_LIMIT")
        return applied(job)

    async def probe() -> str | None:
        await late.wait()
        await asyncio.sleep(0.01)  # v1's answer, blocked, comes first
        up.set()
        return None

    flow = MemoryFlow(portal, room=1, probe=probe)
    async with flow.running():
        await flow.deliver(deal(7, "v1"), message_id="7-v1")
        await flow.until(lambda: flow.caller.calls == [["7-v1"]])
        await flow.deliver(deal(7, "v2"), message_id="7-v2")
        await flow.deliver(deal(2, "x"), message_id="2-x")
        await flow.until(lambda: flow.pipeline.down == "blocked")
        await flow.deliver(deal(7, "v3"), message_id="7-v3")
        late.set()
        await flow.until_settled(4)
    sent = [m for call in flow.caller.calls for m in call if m.startswith("7-")]
    assert sent == ["7-v1", "7-v1", "7-v2", "7-v3"]  # v1 answered blocked, then again
    assert [t for t in flow.titles() if t.startswith("v")] == ["v1", "v2", "v3"]
    assert flow.channel.nacked == []
