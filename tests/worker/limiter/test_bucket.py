"""The request pacer: the whole burst at once, then the portal's drain rate, and back-off on 503."""

from __future__ import annotations

import asyncio

import pytest

from tests.worker.limiter.conftest import BackendFactory
from worker.limiter import PACER_STATE, FakeClock, RequestPacer


def exact_pacer(
    clock: FakeClock,
    make_backend: BackendFactory,
    *,
    reserve: int = 0,
    hold_s: float = 2.0,
    min_share: float = 0.25,
) -> RequestPacer:
    """A pacer with no margin and no headroom, so its timing is easy to state."""
    return RequestPacer(
        burst=50,
        rate_per_s=2.0,
        reserve=reserve,
        margin=0.0,
        headroom_s=0.0,
        hold_s=hold_s,
        min_share=min_share,
        clock=clock,
        backend=make_backend(PACER_STATE),
    )


async def grant_times(clock: FakeClock, pacer: RequestPacer, count: int) -> list[float]:
    """Start ``count`` acquirers at once and return when each got its token, in grant order."""
    granted: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        granted.append(clock.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    while not all(t.done() for t in tasks):
        moved = await clock.advance_to_next()
        assert moved or all(t.done() for t in tasks), "acquirers wait for nothing"
    return granted


async def test_the_whole_burst_is_granted_at_once_then_one_per_drain_interval(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    times = await grant_times(clock, pacer, 53)
    assert times[:50] == [0.0] * 50
    assert times[50:] == pytest.approx([0.5, 1.0, 1.5])


async def test_default_margin_and_headroom_cost_little(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = RequestPacer(burst=50, rate_per_s=2.0, clock=clock, backend=make_backend(PACER_STATE))
    times = await grant_times(clock, pacer, 100)
    assert times[:49] == [0.0] * 49
    assert 0.0 < times[49] < 0.15
    # the 100th request at most 2% later than the ideal (100 - 50) / 2 = 25 s
    assert 25.0 < times[99] <= 25.0 * 1.02
    assert await pacer.rate_per_s() == pytest.approx(2.0 * 0.99)


async def test_a_reserve_leaves_part_of_the_burst_and_of_the_rate_unused(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend, reserve=10)
    times = await grant_times(clock, pacer, 42)
    assert times[:40] == [0.0] * 40
    # 40 of 50 requests kept, so 40/50 of the rate: one every 0.625 s
    assert times[40:] == pytest.approx([0.625, 1.25])


async def test_requests_count_from_their_token_not_their_answer(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    for _ in range(50):
        assert await pacer.acquire() == 0.0
    waiting = asyncio.create_task(pacer.acquire())
    await clock.advance(0.49)
    assert not waiting.done()
    await clock.advance(0.01)
    assert waiting.result() == pytest.approx(0.5)


async def test_an_idle_bucket_drains_and_refills_the_burst(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    await grant_times(clock, pacer, 50)
    await clock.advance(10.0)
    times = await grant_times(clock, pacer, 21)
    assert times[:20] == [10.0] * 20
    assert times[20] == pytest.approx(10.5)


async def test_waiters_are_served_in_arrival_order(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    await grant_times(clock, pacer, 50)
    served: list[int] = []

    async def one(index: int) -> None:
        await pacer.acquire()
        served.append(index)

    tasks = []
    for index in range(6):
        tasks.append(asyncio.create_task(one(index)))
        await clock.settle()
    await clock.advance(3.0)
    assert all(t.done() for t in tasks)
    assert served == list(range(6))


async def test_a_503_fills_the_bucket_and_cuts_the_rate(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    await pacer.acquire()
    await pacer.on_rate_limited()
    assert await pacer.rate_per_s() == pytest.approx(1.5)
    waiting = asyncio.create_task(pacer.acquire())
    await clock.advance(1 / 1.5 - 0.01)
    assert not waiting.done()
    await clock.advance(0.01)
    assert waiting.done()


async def test_the_rate_recovers_linearly_after_a_cut(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    await pacer.on_rate_limited()
    await clock.advance(10.0)
    assert await pacer.rate_per_s() == pytest.approx(2.0 * (0.75 + 0.125))
    await clock.advance(10.0)
    assert await pacer.rate_per_s() == pytest.approx(2.0)
    await clock.advance(100.0)
    assert await pacer.rate_per_s() == pytest.approx(2.0)


async def test_503s_of_one_overflow_cut_once_and_later_ones_cut_again(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    for _ in range(5):
        await pacer.on_rate_limited()
    assert await pacer.rate_per_s() == pytest.approx(1.5)
    await clock.advance(2.0)
    await pacer.on_rate_limited()
    assert await pacer.rate_per_s() == pytest.approx(2.0 * (0.75 + 0.025) * 0.75)


async def test_the_rate_never_drops_below_its_floor(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend, hold_s=0.0, min_share=0.25)
    for _ in range(20):
        await pacer.on_rate_limited()
    assert await pacer.rate_per_s() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("burst", "rate_per_s", "reserve", "headroom_s"),
    [(0, 2.0, 0, 0.2), (50, 0.0, 0, 0.2), (50, 2.0, 50, 0.2), (50, 2.0, 0, -0.1)],
)
def test_impossible_settings_are_refused(
    clock: FakeClock, burst: int, rate_per_s: float, reserve: int, headroom_s: float
) -> None:
    with pytest.raises(ValueError, match=r"must be|out of range"):
        RequestPacer(
            burst=burst, rate_per_s=rate_per_s, reserve=reserve, headroom_s=headroom_s, clock=clock
        )


@pytest.mark.parametrize(
    ("rate_per_s", "at_once", "next_at"),
    [
        # 0.1 s of the drain kept empty: 0.2 requests at 2/s, 0.01 at 0.1/s.
        (2.0, 9, (10 - 9.8) / 2.0),
        (0.1, 9, (10 - 9.99) / 0.1),
    ],
)
async def test_the_headroom_is_time_of_the_portals_drain(
    clock: FakeClock,
    make_backend: BackendFactory,
    rate_per_s: float,
    at_once: int,
    next_at: float,
) -> None:
    pacer = RequestPacer(
        burst=10,
        rate_per_s=rate_per_s,
        margin=0.0,
        headroom_s=0.1,
        clock=clock,
        backend=make_backend(PACER_STATE),
    )
    times = await grant_times(clock, pacer, 10)
    assert times[:at_once] == [0.0] * at_once
    assert times[at_once] == pytest.approx(next_at)


async def test_the_headroom_never_takes_the_last_request_of_the_burst(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    # 1 s at 1,000/s would be 1,000 requests: the bucket still lets one go at once.
    pacer = RequestPacer(
        burst=5,
        rate_per_s=1000.0,
        margin=0.0,
        headroom_s=1.0,
        clock=clock,
        backend=make_backend(PACER_STATE),
    )
    times = await grant_times(clock, pacer, 3)
    assert times == pytest.approx([0.0, 0.001, 0.002], abs=1e-5)


async def test_a_wall_clock_step_back_only_slows_pacing_by_the_step(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    await grant_times(clock, pacer, 50)
    clock.step_time(-10.0)
    times = await grant_times(clock, pacer, 2)
    assert times == pytest.approx([10.5, 11.0])


async def test_a_wall_clock_step_forward_grants_at_most_one_burst_early(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    await grant_times(clock, pacer, 50)
    clock.step_time(3600.0)
    times = await grant_times(clock, pacer, 51)
    assert times[:50] == [0.0] * 50
    assert times[50] == pytest.approx(0.5)


async def test_a_refunded_token_is_granted_again_at_once(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    # A call that took its token but was not sent (handed back): the portal never
    # counted it, so the next call need not wait a drain interval for it.
    pacer = exact_pacer(clock, make_backend)
    assert await grant_times(clock, pacer, 50) == [0.0] * 50
    await pacer.refund()
    assert await grant_times(clock, pacer, 2) == pytest.approx([0.0, 0.5])


async def test_a_refund_never_leaves_the_copy_below_empty(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    pacer = exact_pacer(clock, make_backend)
    await pacer.refund()  # nothing taken: nothing to give back
    times = await grant_times(clock, pacer, 51)
    assert times[:50] == [0.0] * 50
    assert times[50] == pytest.approx(0.5)
