"""The operating-time budget: learns the cost, stops before the limit, resumes as baskets free."""

from __future__ import annotations

import asyncio

import pytest

from tests.worker.limiter.conftest import BackendFactory
from tests.worker.limiter.portal_model import OperatingModel
from worker.limiter import METHOD_STATE, FakeClock, Lease, OperatingBudget, OperatingReport

UPDATE = "crm.item.update"


def make_budget(
    clock: FakeClock, make_backend: BackendFactory, *, limit_s: float = 12.0
) -> OperatingBudget:
    return OperatingBudget(
        limit_s=limit_s,
        window_s=60.0,
        headroom=0.0,
        clock=clock,
        backend=make_backend(METHOD_STATE),
    )


async def call(budget: OperatingBudget, portal: OperatingModel, wanted: int) -> Lease:
    """One call through the budget: acquire, run the commands on the portal, settle."""
    lease = await budget.acquire(UPDATE, wanted)
    reports = [r for r in (portal.call() for _ in range(lease.commands)) if r is not None]
    await budget.settle(lease, reports)
    return lease


async def test_cost_is_learned_from_consecutive_reports_of_a_batch(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    assert await budget.cost_s(UPDATE) is None
    await call(budget, OperatingModel(clock, cost_s=0.3), 5)
    assert await budget.cost_s(UPDATE) == pytest.approx(0.3)


async def test_cost_is_learned_from_a_single_call_after_an_earlier_report(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend, limit_s=480.0)
    portal = OperatingModel(clock, limit_s=480.0, cost_s=0.5)
    await call(budget, portal, 1)
    assert await budget.cost_s(UPDATE) is None  # one total says nothing about one call
    await call(budget, portal, 1)
    assert await budget.cost_s(UPDATE) == pytest.approx(0.5)


async def test_until_the_cost_is_known_one_call_at_a_time(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    first = await budget.acquire(UPDATE, 10)
    second = asyncio.create_task(budget.acquire(UPDATE, 10))
    await clock.advance(5.0)
    assert not second.done()
    await budget.settle(
        first, [OperatingReport(0.2 * (i + 1), clock.time() + 60) for i in range(10)]
    )
    await clock.settle()
    assert second.done()


async def test_the_first_call_is_sized_by_the_prior_cost(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    # 12 s of budget at the assumed 0.4 s per command
    assert await budget.max_commands(UPDATE, 50) == 30


async def test_calls_shrink_as_the_budget_runs_out(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    portal = OperatingModel(clock, cost_s=0.2)
    sizes = [(await call(budget, portal, 25)).commands for _ in range(3)]
    assert sizes == [25, 25, 10]
    assert await budget.remaining_s(UPDATE) == pytest.approx(0.0)
    assert portal.refused == 0


async def test_in_flight_calls_hold_their_share_of_the_budget(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    portal = OperatingModel(clock, cost_s=0.2)
    await call(budget, portal, 10)
    in_flight = await budget.acquire(UPDATE, 40)
    assert in_flight.reserved_s == pytest.approx(8.0)
    assert await budget.remaining_s(UPDATE) == pytest.approx(2.0)
    assert (await budget.acquire(UPDATE, 50)).commands == 10


async def test_a_call_is_capped_well_under_the_request_cut_off(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend, limit_s=480.0)
    portal = OperatingModel(clock, limit_s=480.0, cost_s=1.0)
    await call(budget, portal, 5)
    assert await budget.max_commands(UPDATE, 50) == 20  # 20 s of server time at 1 s each
    lease = await budget.acquire(UPDATE, 10)
    await budget.settle(
        lease, [portal.call() or OperatingReport() for _ in range(10)], duration_s=40
    )
    assert await budget.max_commands(UPDATE, 50) == 5  # the request took 4 s per command


async def test_a_spent_method_waits_for_the_reset_and_gets_back_what_it_freed(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    portal = OperatingModel(clock, cost_s=0.2)
    await call(budget, portal, 30)  # 6 s in the basket starting at 0
    await clock.advance(30.0)
    await call(budget, portal, 30)  # 6 s in the basket starting at 30
    waiting = asyncio.create_task(call(budget, portal, 50))
    await clock.advance(30.2)
    assert not waiting.done()
    await clock.advance(0.05)  # the reset at 60 s, plus 0.25 s of grace
    assert waiting.done()
    lease = waiting.result()
    assert lease.waited_s == pytest.approx(30.25)
    assert lease.commands == 30  # only the oldest basket's 6 s came back
    assert portal.refused == 0


async def test_a_429_pauses_the_method_until_the_reset_and_then_probes(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    await call(budget, OperatingModel(clock, cost_s=0.2), 5)
    await budget.on_blocked(UPDATE, reset_at=clock.time() + 20.0)
    assert await budget.remaining_s(UPDATE) == 0.0
    assert await budget.max_commands(UPDATE, 50) == 1
    waiting = asyncio.create_task(budget.acquire(UPDATE, 50))
    await clock.advance(20.2)
    assert not waiting.done()
    await clock.advance(0.05)
    assert waiting.done()
    assert waiting.result().commands == 1


async def test_a_429_without_a_reset_time_pauses_until_the_next_basket_drops(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    await call(budget, OperatingModel(clock, cost_s=0.2), 5)
    await clock.advance(10.0)
    await budget.on_blocked(UPDATE, reset_at=None)
    waiting = asyncio.create_task(budget.acquire(UPDATE, 1))
    await clock.advance(50.0)
    assert not waiting.done()
    await clock.advance(0.25)
    assert waiting.done()
    assert waiting.result().waited_s == pytest.approx(50.25)


async def test_methods_have_separate_budgets(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    await budget.on_blocked(UPDATE, reset_at=clock.time() + 60.0)
    lease = await budget.acquire("crm.item.list", 5)
    assert (lease.commands, lease.waited_s) == (5, 0.0)
    assert await budget.remaining_s("crm.item.list") == pytest.approx(12.0 - 5 * 0.4)


async def test_a_call_that_did_not_run_gives_its_reservation_back(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    await call(budget, OperatingModel(clock, cost_s=0.2), 5)
    lease = await budget.acquire(UPDATE, 50)
    await budget.settle(lease, [])
    assert await budget.remaining_s(UPDATE) == pytest.approx(11.0)


async def test_a_lease_never_settled_stops_counting(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    await budget.acquire(UPDATE, 10)
    await clock.advance(90.0)
    assert await budget.remaining_s(UPDATE) == pytest.approx(12.0)


async def test_a_stale_report_does_not_hide_newer_charges(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    reset_at = clock.time() + 60.0
    await budget.observe(UPDATE, [OperatingReport(1.0, reset_at), OperatingReport(5.0, reset_at)])
    await budget.observe(UPDATE, [OperatingReport(3.0, reset_at)])
    assert await budget.remaining_s(UPDATE) == pytest.approx(7.0)
    # a report after the oldest basket dropped out is believed even when lower
    await budget.observe(UPDATE, [OperatingReport(2.0, reset_at + 6.0)])
    assert await budget.remaining_s(UPDATE) == pytest.approx(10.0)


async def test_a_batch_charged_as_a_whole_teaches_its_growth_spread_over_its_commands(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    reset_at = clock.time() + 60.0
    first = await budget.acquire("batch", 10)
    await budget.settle(first, [OperatingReport(2.0, reset_at)] * 10, together=True)
    assert await budget.cost_s("batch") is None  # the first total may hold older charges
    second = await budget.acquire("batch", 5)
    await budget.settle(second, [OperatingReport(3.5, reset_at)] * 5, together=True)
    assert await budget.cost_s("batch") == pytest.approx(0.3)  # 1.5 s over 5 commands
    assert await budget.remaining_s("batch") == pytest.approx(12.0 - 3.5)


async def test_free_commands_are_never_held_back(
    clock: FakeClock, make_backend: BackendFactory
) -> None:
    budget = make_budget(clock, make_backend)
    portal = OperatingModel(clock, cost_s=0.05)  # under 0.1 s: not charged
    sizes = [(await call(budget, portal, 50)).commands for _ in range(4)]
    assert sizes == [30, 50, 50, 50]  # the first call is sized by the prior cost
    assert await budget.cost_s(UPDATE) == 0.0


def test_impossible_settings_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="positive"):
        OperatingBudget(limit_s=0.0, window_s=60.0, clock=clock)
    with pytest.raises(ValueError, match="headroom"):
        OperatingBudget(limit_s=12.0, window_s=60.0, headroom=1.0, clock=clock)
