"""The fake clock moves only when told, and wakes sleepers at their own deadlines."""

from __future__ import annotations

import asyncio

import pytest

from worker.limiter import FakeClock, SystemClock
from worker.limiter.clock import sleep_or_wake


async def test_sleep_returns_only_once_time_reaches_its_deadline(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(2.0))
    await clock.advance(1.999)
    assert not task.done()
    await clock.advance(0.001)
    assert task.done()


async def test_sleepers_wake_in_deadline_order_at_their_own_time(clock: FakeClock) -> None:
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(nap(n, s)) for n, s in (("late", 3.0), ("early", 1.0))]
    await clock.advance(10.0)
    await asyncio.gather(*tasks)
    assert woke == [("early", 1.0), ("late", 3.0)]
    assert clock.monotonic() == 10.0


async def test_time_is_epoch_plus_monotonic() -> None:
    clock = FakeClock(start=5.0, epoch=1_000.0)
    assert clock.time() == 1_005.0
    await clock.advance(2.5)
    assert (clock.monotonic(), clock.time()) == (7.5, 1_007.5)


async def test_advance_to_next_jumps_to_the_earliest_sleeper(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(4.0))
    await clock.settle()
    assert clock.next_wakeup() == 4.0
    assert await clock.advance_to_next()
    assert task.done()
    assert clock.monotonic() == 4.0
    assert not await clock.advance_to_next()


async def test_a_cancelled_sleeper_is_forgotten(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(1.0))
    await clock.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.next_wakeup() is None


async def test_zero_sleep_yields_without_moving_time(clock: FakeClock) -> None:
    await clock.sleep(0.0)
    assert clock.monotonic() == 0.0


async def test_system_clock_reads_the_machine() -> None:
    clock = SystemClock()
    first = clock.monotonic()
    await clock.sleep(0.0)
    assert clock.monotonic() >= first
    assert clock.time() > 1_600_000_000


async def test_sleep_or_wake_returns_early_when_woken(clock: FakeClock) -> None:
    wake = asyncio.Event()
    task = asyncio.create_task(sleep_or_wake(clock, 10.0, wake))
    await clock.advance(1.0)
    wake.set()
    await clock.settle()
    assert task.done()
    assert clock.next_wakeup() is None


async def test_sleep_or_wake_returns_after_its_time_when_not_woken(clock: FakeClock) -> None:
    task = asyncio.create_task(sleep_or_wake(clock, 10.0, asyncio.Event()))
    await clock.advance(9.9)
    assert not task.done()
    await clock.advance(0.1)
    assert task.done()


async def test_settle_waits_for_work_the_run_queue_does_not_show(clock: FakeClock) -> None:
    answered = asyncio.Event()
    # a timer stands for a server's answer: while it is pending, the run queue is empty
    asyncio.get_running_loop().call_later(0.02, answered.set)
    woke: list[float] = []

    async def reader() -> None:
        await answered.wait()
        await clock.sleep(1.0)
        woke.append(clock.monotonic())

    async def busy() -> bool:
        if answered.is_set():
            return False
        await answered.wait()
        return True

    clock.wait_also_for(busy)
    task = asyncio.create_task(reader())
    await clock.advance(1.0)
    assert task.done()
    assert woke == [1.0]


async def test_step_time_moves_the_wall_clock_only(clock: FakeClock) -> None:
    clock.step_time(-30.0)
    assert (clock.monotonic(), clock.time()) == (0.0, 1_800_000_000.0 - 30.0)
