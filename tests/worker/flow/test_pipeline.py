"""One portal's pipeline in memory: the flow rules, each in milliseconds.

The portal is a function from a job to its decision, the broker a recording
publisher and a channel that keeps the ack rules (tests/worker/flow/memory.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from schemas.events import ErrorClass
from schemas.wire import ATTEMPTS_HEADER
from tests.worker.flow.memory import MemoryFlow, deal
from worker.flow.batching import linger_for
from worker.flow.calling import Again, Decision, PortalDown
from worker.flow.jobs import Job
from worker.flow.outcomes import Failed, Retry, Settled, Succeeded


def applied(job: Job) -> Decision:
    """The portal applies every command and returns the item as sent (one attempt, as
    the caller counts an answered call)."""
    assert job.command is not None
    job.attempts += 1
    return Succeeded(item={"id": job.command.id, **job.params["fields"]})


def blocked_until_probed(
    answers: list[str | None],
) -> tuple[Callable[[Job], Decision], Callable[[], Awaitable[str | None]]]:
    """A portal that answers OVERLOAD_LIMIT (and applies once up), and its probe, which
    gives ``answers`` in turn; the last one finds the portal up, and so do the calls
    after it."""
    down = asyncio.Event()
    down.set()

    def portal(job: Job) -> Decision:
        if down.is_set():
            return PortalDown("blocked", "OVERLOAD_LIMIT")
        return applied(job)

    async def probe() -> str | None:
        if not answers[1:]:
            down.clear()
        return answers.pop(0)

    return portal, probe


def title(job: Job) -> str:
    return str(job.params["fields"]["title"])


# -- ordering


async def test_one_command_per_item_at_a_time_in_arrival_order() -> None:
    flow = MemoryFlow(applied)
    async with flow.running():
        for n in range(3):
            await flow.deliver(deal(1, f"v{n}"), message_id=f"m{n}")
        await flow.deliver(deal(2, "other"), message_id="o")
        await flow.until_settled(4)
    # The item's commands went one call after another; the other item rode with the first.
    assert flow.caller.calls == [["m0", "o"], ["m1"], ["m2"]]
    assert flow.titles() == ["v0", "other", "v1", "v2"]
    assert sorted(flow.channel.acked) == [1, 2, 3, 4]


async def test_an_outcome_not_confirmed_when_its_connection_went_is_not_published_after() -> None:
    flow = MemoryFlow(applied)
    flow.publisher.down = True
    async with flow.running():
        await flow.deliver(deal(1, "first"), message_id="m0")
        await flow.deliver(deal(1, "second"), message_id="m1")
        await flow.until(lambda: flow.caller.calls == [["m0"]])
        await asyncio.sleep(0.05)  # its success event tried and not confirmed
        flow.channel.close()  # the connection went: both deliveries go back
        flow.publisher.down = False  # and came back
        await flow.until_settled(1)
        await asyncio.sleep(0.3)  # past the next tries of the publish
    # The broker delivers m0 again: its next delivery reports it, this one does not.
    assert flow.events("results") == []
    assert flow.observer.ends == [("m0", Settled.HANDED_BACK)]
    assert flow.channel.redelivered_ids() == ["m0", "m1"]
    assert flow.caller.calls == [["m0"]]  # m1, on the same channel, was not sent


# -- batching


async def test_a_call_carries_as_many_commands_as_its_ticket_allows() -> None:
    flow = MemoryFlow(applied, room=3)
    flow.limiter.open.clear()  # the limiter holds calls back while deliveries pile up
    async with flow.running():
        for item_id in range(1, 8):
            await flow.deliver(deal(item_id, "x"), message_id=f"m{item_id}")
        flow.limiter.open.set()
        await flow.until_settled(7)
    assert [len(call) for call in flow.caller.calls] == [3, 3, 1]
    assert [m for call in flow.caller.calls for m in call] == [f"m{i}" for i in range(1, 8)]


async def test_a_lone_command_leaves_after_the_linger() -> None:
    flow = MemoryFlow(applied, linger_s=0.05)
    async with flow.running():
        started = asyncio.get_running_loop().time()
        await flow.deliver(deal(1, "alone"))
        await flow.until_settled(1)
        waited = asyncio.get_running_loop().time() - started
    assert flow.caller.calls == [[flow.observer.ends[0][0]]]
    assert 0.04 <= waited < 1.0


async def _trickle(flow: MemoryFlow, count: int, gap_s: float, *, first: int = 1) -> None:
    for item_id in range(first, first + count):
        await flow.deliver(deal(item_id, "x"), message_id=f"m{item_id}")
        await asyncio.sleep(gap_s)


def _timed(sent_at: list[float]) -> Callable[[Job], Decision]:
    """`applied`, noting the loop's time each command reached the portal."""
    loop = asyncio.get_running_loop()

    def timed(job: Job) -> Decision:
        sent_at.append(loop.time())
        return applied(job)

    return timed


async def test_a_batch_keeps_filling_while_commands_keep_coming() -> None:
    # A command every 30 ms, the linger 100 ms: the 8 span 210 ms, and go as one call.
    flow = MemoryFlow(applied, linger_s=0.1)
    async with flow.running():
        await _trickle(flow, 8, 0.03)
        await flow.until_settled(8)
    assert flow.caller.calls == [[f"m{i}" for i in range(1, 9)]]


async def test_a_batch_fills_for_twenty_lingers_at_most() -> None:
    # A command every 50 ms, the linger 100 ms: 50 would take 2.5 s to come, but the
    # first call leaves after 2 s (20 lingers) with what it has.
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    flow = MemoryFlow(_timed(sent_at), linger_s=0.1)
    async with flow.running():
        started = loop.time()
        await _trickle(flow, 60, 0.05)
        await flow.until_settled(60)
    first = flow.caller.calls[0]
    assert 2 <= len(first) < 50
    assert sent_at[0] - started >= 1.9


async def test_a_call_leaves_right_after_its_leave_even_while_its_group_filled() -> None:
    # The limiter counts a request from its leave: a group that filled after it
    # would reach the portal 210 ms later than the limiter planned.
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    flow = MemoryFlow(_timed(sent_at), linger_s=0.1)
    async with flow.running():
        started = loop.time()
        await _trickle(flow, 8, 0.03)
        await flow.until_settled(8)
    assert flow.caller.calls == [[f"m{i}" for i in range(1, 9)]]
    assert flow.limiter.admitted_at[0] - started >= 0.2
    assert sent_at[0] - flow.limiter.admitted_at[0] < 0.1  # the old order: 210 ms


async def test_a_busy_loop_is_not_a_gap_between_commands() -> None:
    # The loop is blocked for 300 ms (three lingers) and the second command comes
    # 20 ms after: the linger ran out late, so the group waits on for it.
    flow = MemoryFlow(applied, linger_s=0.1)
    loop = asyncio.get_running_loop()

    def stall_then_deliver() -> None:
        time.sleep(0.3)
        deliver = flow.deliver(deal(2, "x"), message_id="m2")
        loop.call_later(0.02, lambda: asyncio.ensure_future(deliver))

    async with flow.running():
        await flow.deliver(deal(1, "x"), message_id="m1")
        loop.call_later(0.05, stall_then_deliver)
        await flow.until_settled(2)
    assert flow.caller.calls == [["m1", "m2"]]


async def test_gaps_do_not_end_a_group_while_the_portals_queue_has_a_backlog() -> None:
    # Commands 150 ms apart, the linger 100 ms: alone, each leaves by itself; with
    # commands waiting on the broker, the group fills on through the gaps.
    waiting = {"acme": 1000}
    flow = MemoryFlow(applied, linger_s=0.1, backlog=lambda: waiting["acme"] > 0)
    async with flow.running():
        await _trickle(flow, 4, 0.15)
        waiting["acme"] = 0  # the queue is empty now: the next gap ends the group
        await _trickle(flow, 2, 0.15, first=5)
        await flow.until_settled(6)
    assert flow.caller.calls == [["m1", "m2", "m3", "m4", "m5"], ["m6"]]


def test_a_slow_portal_lingers_a_twentieth_of_its_request_interval() -> None:
    assert linger_for(0.05, 2.0) == 0.05  # 25 ms is shorter than the setting
    assert linger_for(0.05, 0.1) == 0.5  # one request per 10 s: 20 lingers are 10 s
    assert linger_for(0.8, 0.1) == 0.8  # the setting is longer
    assert linger_for(0.0, 0.1) == 0.0  # BATCH_LINGER_MS=0: no waiting, whatever the pace


async def test_a_command_a_batch_would_change_goes_in_a_call_of_its_own() -> None:
    flow = MemoryFlow(applied)
    flow.limiter.open.clear()
    async with flow.running():
        await flow.deliver(deal(1, "plain"), message_id="a")
        await flow.deliver(deal(2, "pay $result[x]"), message_id="alone")  # batch rewrites it
        await flow.deliver(deal(3, "plain"), message_id="b")
        flow.limiter.open.set()
        await flow.until_settled(3)
    assert sorted(flow.caller.calls) == [["a", "b"], ["alone"]]


async def test_batch_size_one_sends_every_command_alone() -> None:
    flow = MemoryFlow(applied, batch_size=1)
    async with flow.running():
        for item_id in (1, 2, 3):
            await flow.deliver(deal(item_id, "x"), message_id=f"m{item_id}")
        await flow.until_settled(3)
    assert sorted(flow.caller.calls) == [["m1"], ["m2"], ["m3"]]


# -- retries


async def test_a_transient_failure_goes_to_its_delay_tier_and_parks_the_item() -> None:
    failing = {"first"}

    def portal(job: Job) -> Decision:
        if job.message_id in failing:
            failing.discard(job.message_id)
            job.attempts += 1
            return Retry("INTERNAL_SERVER_ERROR: try later")
        return applied(job)

    flow = MemoryFlow(portal)
    async with flow.running():
        await flow.deliver(deal(1, "first"), message_id="first")
        await flow.deliver(deal(1, "second"), message_id="second")
        await flow.until_settled(1)
        [(queue, properties, body)] = flow.publisher.published
        assert queue == "updates.retry.5s"  # the first tier
        assert (properties.headers or {})[ATTEMPTS_HEADER] == 1
        assert properties.message_id == "first"
        assert flow.caller.calls == [["first"]]  # "second" waits for the copy
        # The copy comes back from its tier: it goes first, then the item's next command.
        await flow.deliver(body, source="retry", message_id="first", headers=properties.headers)
        await flow.until_settled(3)
    assert flow.caller.calls == [["first"], ["first"], ["second"]]
    assert flow.titles() == ["first", "second"]
    assert [event["attempts"] for event in flow.events("results")] == [2, 1]


async def test_attempts_exhausted_end_as_a_transient_failure() -> None:
    def portal(job: Job) -> Decision:
        job.attempts += 1
        return Retry("INTERNAL_SERVER_ERROR: down")

    flow = MemoryFlow(portal, max_attempts=1)
    async with flow.running():
        await flow.deliver(deal(1, "never"), message_id="m")
        await flow.until_settled(1)
    [event] = flow.events("dead")
    assert event["error"]["class"] == ErrorClass.TRANSIENT
    assert event["error"]["code"] == "ATTEMPTS_EXHAUSTED"
    assert flow.observer.ends == [("m", Settled.FAILED)]
    assert flow.channel.acked == [1]


async def test_a_rate_limited_command_goes_again_without_using_an_attempt() -> None:
    answers = iter([Again("QUERY_LIMIT_EXCEEDED")])

    def portal(job: Job) -> Decision:
        return next(answers, None) or applied(job)

    flow = MemoryFlow(portal)
    async with flow.running():
        await flow.deliver(deal(1, "later"), message_id="m")
        await flow.until_settled(1)
    assert flow.caller.calls == [["m"], ["m"]]
    [event] = flow.events("results")
    assert event["attempts"] == 1  # the call that was answered; the rate limit used none


# -- settling


async def test_the_success_event_goes_to_reply_to_and_the_ack_follows_its_confirm() -> None:
    flow = MemoryFlow(applied)
    async with flow.running():
        await flow.deliver(deal(1, "hello"), message_id="m", reply_to="replies")
        await flow.until_settled(1)
    [(queue, properties, _)] = flow.publisher.published
    assert (queue, properties.message_id) == ("replies", "m")
    assert flow.channel.acked == [1]
    assert flow.observer.ends == [("m", Settled.SUCCEEDED)]


async def test_an_unroutable_reply_to_falls_back_to_the_result_queue() -> None:
    flow = MemoryFlow(applied)
    flow.publisher.missing_queues.add("gone")
    async with flow.running():
        await flow.deliver(deal(1, "hello"), message_id="m", reply_to="gone")
        await flow.until_settled(1)
    assert flow.titles("results") == ["hello"]


async def test_a_nacked_event_is_published_again_before_the_ack() -> None:
    flow = MemoryFlow(applied)
    flow.publisher.refusals = 2
    async with flow.running():
        await flow.deliver(deal(1, "hello"), message_id="m")
        await flow.until_settled(1, timeout_s=5)
    assert flow.titles() == ["hello"]  # published once, after two refusals
    assert flow.channel.acked == [1]


async def test_a_failure_event_keeps_the_command_and_goes_to_reply_to_too() -> None:
    def portal(job: Job) -> Decision:
        job.attempts += 1
        return Failed(ErrorClass.NOT_FOUND, "NOT_FOUND", "Item was not found.")

    flow = MemoryFlow(portal)
    async with flow.running():
        await flow.deliver(deal(7, "x"), message_id="m", reply_to="replies")
        await flow.until_settled(1)
    dead, replied = flow.events("dead"), flow.events("replies")
    assert dead == replied
    assert dead[0]["command"] == deal(7, "x")
    assert dead[0]["error"]["class"] == "not_found"


async def test_an_invalid_command_fails_validation_without_a_call() -> None:
    flow = MemoryFlow(applied)
    async with flow.running():
        await flow.deliver({"entityTypeId": 2, "id": 1, "fields": {"opened": 1}}, message_id="m")
        await flow.deliver(b"not json", message_id="n", content_type="text/plain")
        await flow.until_settled(2)
    assert flow.caller.calls == []
    assert [event["error"]["class"] for event in flow.events("dead")] == ["validation"] * 2


async def test_a_crashing_call_hands_the_commands_back() -> None:
    def portal(job: Job) -> Decision:
        raise RuntimeError("a bug")

    flow = MemoryFlow(portal)
    async with flow.running():
        await flow.deliver(deal(1, "x"), message_id="m")
        await flow.until_settled(1)
    assert flow.channel.nacked == [1]
    assert flow.observer.ends == [("m", Settled.HANDED_BACK)]


# -- pause and resume


async def test_a_portal_down_stops_sending_and_consuming_then_resumes_in_order() -> None:
    """Nothing goes back to the broker: what the pipeline holds waits, in order, and is
    sent once the probe finds the portal up; consumption is held meanwhile."""
    portal, probe = blocked_until_probed(["blocked", None])
    flow = MemoryFlow(portal, probe=probe)
    flow.limiter.open.clear()
    async with flow.running():
        # Item 1's v0 and v1, item 2's v0: v1 waits behind v0 in the gate.
        await flow.deliver(deal(1, "v0"), message_id="1-v0")
        await flow.deliver(deal(1, "v1"), message_id="1-v1")
        await flow.deliver(deal(2, "w0"), message_id="2-w0")
        flow.limiter.open.set()
        await flow.until_settled(3)
    assert flow.observer.down == [("blocked", "OVERLOAD_LIMIT")]
    assert flow.consumption.history == ["hold acme", "release acme"]
    assert flow.probes == 2
    assert flow.caller.calls[0] == ["1-v0", "2-w0"]  # answered: the portal is blocked
    assert [m for call in flow.caller.calls[1:] for m in call] == ["1-v0", "2-w0", "1-v1"]
    assert flow.titles() == ["v0", "w0", "v1"]
    assert flow.channel.nacked == []
    assert not any(queue == "dead" for queue, _, _ in flow.publisher.published)
    assert [event["attempts"] for event in flow.events("results")] == [1, 1, 1]


async def test_deliveries_arriving_while_the_portal_is_down_wait_in_order() -> None:
    never_up: list[str | None] = ["blocked"] * 1000

    def portal(job: Job) -> Decision:
        return PortalDown("bad_credentials", "NO_AUTH_FOUND")

    async def probe() -> str | None:
        await asyncio.sleep(0.01)
        return never_up.pop()

    flow = MemoryFlow(portal, probe=probe)
    async with flow.running():
        await flow.deliver(deal(1, "a"), message_id="a")
        await flow.until(lambda: flow.pipeline.down is not None)
        await flow.deliver(deal(1, "b"), message_id="b")
        await flow.deliver(deal(2, "c"), message_id="c")
        await asyncio.sleep(0.05)
        assert flow.pipeline.paused
        assert len(flow.pipeline.gate) == 1  # b, behind a
    assert flow.caller.calls == [["a"]]  # nothing more is sent while it is down
    assert flow.channel.nacked == []
    assert flow.channel.unacked == {1, 2, 3}
    assert flow.publisher.published == []  # no failure event for a portal-wide state


# -- drain


async def test_drain_lets_calls_out_finish_and_leaves_followers_unacked() -> None:
    release = asyncio.Event()

    async def slow_portal(job: Job) -> Decision:
        await release.wait()
        return applied(job)

    flow = MemoryFlow(slow_portal)
    async with flow.running():
        await flow.deliver(deal(1, "leader"), message_id="leader")
        await flow.deliver(deal(1, "follower"), message_id="follower")
        await flow.until(lambda: len(flow.caller.calls) == 1)
        draining = asyncio.create_task(flow.pipeline.drain())
        await asyncio.sleep(0.01)
        assert not draining.done()  # the call is still out
        release.set()
        await draining
        await flow.acks.flush()
    assert flow.titles() == ["leader"]
    assert flow.channel.acked == [1]
    assert flow.channel.nacked == []
    assert flow.channel.unacked == {2}  # the follower goes back with the connection


# -- idle


async def test_a_pipeline_is_idle_only_with_nothing_in_its_care() -> None:
    """What `Lanes` drops a lane by: commands held, an item parked for its retry copy
    or a portal down keep the pipeline busy; it is idle from its last outcome on."""
    failing = {"first"}
    down = asyncio.Event()

    def portal(job: Job) -> Decision:
        if down.is_set():
            return PortalDown("blocked", "OVERLOAD_LIMIT")
        if job.message_id in failing:
            failing.discard(job.message_id)
            job.attempts += 1
            return Retry("INTERNAL_SERVER_ERROR: try later")
        return applied(job)

    async def probe() -> str | None:
        return "blocked" if down.is_set() else None

    flow = MemoryFlow(portal, probe=probe)
    pipeline = flow.pipeline
    assert pipeline.idle_since() is not None  # nothing came yet
    flow.limiter.open.clear()
    async with flow.running():
        await flow.deliver(deal(1, "first"), message_id="first")
        assert pipeline.idle_since() is None  # held, waiting for the limiter
        flow.limiter.open.set()
        await flow.until_settled(1)
        [(_, properties, body)] = flow.publisher.published
        assert pipeline.idle_since() is None  # item 1 is parked for its retry copy
        await flow.deliver(body, source="retry", message_id="first", headers=properties.headers)
        await flow.until_settled(2)
        settled_at = time.monotonic()
        idle = pipeline.idle_since()
        assert idle is not None
        assert idle <= settled_at
        # A portal down: busy until it answers again, though it holds no command then.
        down.set()
        await flow.deliver(deal(2, "second"), message_id="second")
        await flow.until(lambda: flow.observer.down != [])
        assert pipeline.idle_since() is None
        down.clear()
        await flow.until_settled(3)
        await flow.until(lambda: pipeline.idle_since() is not None)
        later = pipeline.idle_since()
        assert later is not None
        assert later > idle
