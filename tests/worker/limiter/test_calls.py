"""A call's leave: admitted against the account the portal charges it to, as answers show it."""

from __future__ import annotations

import asyncio

import pytest

from tests.worker.limiter.conftest import BackendFactory
from worker.limiter import (
    METHOD_STATE,
    PACER_STATE,
    CallLimiter,
    FakeClock,
    OperatingBudget,
    OperatingReport,
    RequestPacer,
)

UPDATE = "crm.item.update"


def make_limiter(clock: FakeClock, make_backend: BackendFactory) -> CallLimiter:
    budget = OperatingBudget(
        limit_s=12.0, window_s=60.0, headroom=0.0, clock=clock, backend=make_backend(METHOD_STATE)
    )
    pacer = RequestPacer(burst=50, rate_per_s=2.0, clock=clock, backend=make_backend(PACER_STATE))
    return CallLimiter(method=UPDATE, budget=budget, pacer=pacer)


def same_total(total: float, commands: int, clock: FakeClock) -> list[OperatingReport]:
    return [OperatingReport(total, clock.time() + 60.0)] * commands


def growing(start: float, step: float, commands: int, clock: FakeClock) -> list[OperatingReport]:
    return [OperatingReport(start + step * (n + 1), clock.time() + 60.0) for n in range(commands)]


async def test_until_an_answer_shows_otherwise_a_batch_is_charged_to_its_commands_method(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    limiter = make_limiter(clock, make_backend)
    leave = await limiter.admit(50)
    assert (leave.lease.method, leave.as_batch) == (UPDATE, False)
    charged = await limiter.settle(leave, growing(0, 0.2, 10, clock), duration_s=0.1, batch=True)
    assert charged == UPDATE
    assert await limiter.remaining_s() == pytest.approx(10.0)
    again = await limiter.admit(50)
    assert (again.lease.method, again.as_batch) == (UPDATE, False)


async def test_a_batch_whose_commands_report_one_total_moves_batches_to_the_batch_account(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    limiter = make_limiter(clock, make_backend)
    leave = await limiter.admit(50)
    charged = await limiter.settle(leave, same_total(2.0, 10, clock), duration_s=0.1, batch=True)
    assert charged == "batch"
    assert await limiter.remaining_s("batch") == pytest.approx(10.0)
    assert await limiter.remaining_s() == pytest.approx(12.0), "the lease went back whole"
    batch = await limiter.admit(50)
    assert (batch.lease.method, batch.as_batch) == ("batch", True)
    await limiter.settle(batch, same_total(2.4, 2, clock), duration_s=0.1, batch=True)
    single = await limiter.admit(1)
    assert (single.lease.method, single.as_batch) == (UPDATE, False), "a single call: its method"
    await limiter.settle(single, [OperatingReport(0.2, clock.time() + 60.0)], duration_s=0.1)
    assert await limiter.remaining_s() == pytest.approx(11.8)
    assert await limiter.remaining_s("batch") == pytest.approx(9.6)


async def test_one_total_never_overrides_commands_seen_charged_one_by_one(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    limiter = make_limiter(clock, make_backend)
    leave = await limiter.admit(50)
    await limiter.settle(leave, growing(0, 0.2, 3, clock), duration_s=0.1, batch=True)
    # Commands under the charging floor after the first: per-command totals look alike.
    leave = await limiter.admit(50)
    charged = await limiter.settle(leave, same_total(0.8, 3, clock), duration_s=0.1, batch=True)
    assert charged == UPDATE
    assert (await limiter.admit(50)).lease.method == UPDATE


async def test_a_batch_refused_whole_pauses_the_batch_account_only(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    limiter = make_limiter(clock, make_backend)
    leave = await limiter.admit(50)
    await limiter.time_limited("batch")
    await limiter.settle(leave, [], duration_s=0.1, batch=True)
    assert await limiter.remaining_s("batch") == 0.0
    assert await limiter.remaining_s() == pytest.approx(12.0)
    single = await limiter.admit(1)
    assert single.lease.method == UPDATE
    assert single.waited_s == 0.0


async def test_a_command_refused_inside_a_batch_shows_batches_charged_per_command(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    limiter = make_limiter(clock, make_backend)
    leave = await limiter.admit(50)
    await limiter.settle(leave, same_total(2.0, 5, clock), duration_s=0.1, batch=True)
    leave = await limiter.admit(50)
    assert leave.lease.method == "batch"
    await limiter.time_limited("command")
    await limiter.settle(leave, [], duration_s=0.1, batch=True)
    assert await limiter.remaining_s() == 0.0
    # The next batch waits out the method's pause, and goes charged per command.
    waiting = asyncio.create_task(limiter.admit(50))
    await clock.advance(1.0)
    assert not waiting.done()
    await clock.advance(60.0)
    batch = await waiting
    assert (batch.lease.method, batch.as_batch) == (UPDATE, False)
