"""At start, every portal's first request before any portal's second, at no cost to its bucket."""

from __future__ import annotations

import asyncio

import pytest

from worker.limiter import FakeClock, FirstCalls, RequestPacer


def pacer(clock: FakeClock, first_calls: FirstCalls, portal: str) -> RequestPacer:
    """A portal of burst 5 at 1 request a second (0.99 with the default margin)."""
    return RequestPacer(burst=5, rate_per_s=1.0, clock=clock, turn=first_calls.turn(portal))


async def granted_at(clock: FakeClock, pacer: RequestPacer) -> asyncio.Task[float]:
    async def one() -> float:
        await pacer.acquire()
        return clock.monotonic()

    task = asyncio.create_task(one())
    await clock.settle()
    return task


async def test_a_second_request_waits_for_the_first_of_every_portal_that_started_waiting() -> None:
    clock = FakeClock()
    first_calls = FirstCalls(["a", "b", "c"])
    a, b, c = (pacer(clock, first_calls, key) for key in "abc")
    assert (await granted_at(clock, a)).result() == 0.0
    second = await granted_at(clock, a)
    await clock.advance(0.1)
    assert (await granted_at(clock, b)).result() == pytest.approx(0.1)
    assert not second.done()  # c has not made its first request yet
    await clock.advance(0.1)
    assert (await granted_at(clock, c)).result() == pytest.approx(0.2)
    await clock.settle()
    assert second.done()
    assert second.result() == pytest.approx(0.2)
    assert first_calls.waiting == frozenset()


async def test_the_wait_ends_once_half_a_request_has_drained_since_the_first() -> None:
    clock = FakeClock()
    first_calls = FirstCalls(["a", "never"])
    a = pacer(clock, first_calls, "a")
    await a.acquire()
    second = await granted_at(clock, a)
    while not second.done():
        assert await clock.advance_to_next()
    # Half a request at 0.99 a second: the bucket still holds half of the first.
    assert second.result() == pytest.approx(0.5 / 0.99)
    assert first_calls.waiting == frozenset({"never"})


async def test_only_the_second_request_waits_and_the_bucket_loses_nothing() -> None:
    clock = FakeClock()
    first_calls = FirstCalls(["a", "never"])
    a = pacer(clock, first_calls, "a")
    unpaired = RequestPacer(burst=5, rate_per_s=1.0, clock=clock)
    times: dict[str, list[float]] = {"turns": [], "none": []}

    async def requests(which: str, p: RequestPacer) -> None:
        for _ in range(10):
            await p.acquire()
            times[which].append(clock.monotonic())

    tasks = [
        asyncio.create_task(requests("turns", a)),
        asyncio.create_task(requests("none", unpaired)),
    ]
    while not all(task.done() for task in tasks):
        assert await clock.advance_to_next()
    # The burst goes later, but the last request, bound by the drain, goes when it would have.
    assert times["turns"][1] == pytest.approx(0.5 / 0.99)
    assert times["turns"][2:4] == pytest.approx([0.5 / 0.99] * 2)
    assert times["turns"][-1] == pytest.approx(times["none"][-1])


async def test_portals_that_started_with_nothing_waiting_hold_nobody_back() -> None:
    clock = FakeClock()
    first_calls = FirstCalls([])
    a = pacer(clock, first_calls, "a")
    assert [(await granted_at(clock, a)).result() for _ in range(4)] == [0.0] * 4
