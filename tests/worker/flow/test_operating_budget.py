"""The worker's calls against a real sandbox portal on one fake clock: the operating budget.

The pipeline, the batcher, the limiter (`CallLimiter` over `OperatingBudget`
and `RequestPacer`), the caller and the HTTP client are the worker's own; the
portal is the sandbox over real HTTP, reading the same fake clock as the
limiter. Time moves only once every task waits for the clock and no request is
on its way, so minutes of windows pass in a moment and every figure is exact.

The portal is run both ways the sources disagree on (`--batch-charging`): each
nested command charged to its own method, or the whole batch to the method
`batch`. Under either the worker must never be refused with
OPERATION_TIME_LIMIT, and must use at least 95% of the budget in every window.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from sandbox.config import BatchCharging, SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.flow.memory import MemoryFlow, deal
from tests.worker.limiter.tracking import InFlight
from worker.bitrix import BatchAnswer, BitrixClient, CommandAnswer, WebhookAuth, make_http_client
from worker.flow.calling import METHOD, Caller, Decision
from worker.flow.jobs import Job
from worker.flow.observer import QuietObserver
from worker.limiter import CallLimiter, FakeClock, OperatingBudget, RequestPacer

pytestmark = pytest.mark.sandbox

LIMIT_S, WINDOW_S, COST_S = 12.0, 60.0, 0.2  # 60 updates a window, as bench/ runs it
WINDOWS = 4
ITEMS = 100


class SharedTime:
    """The sandbox's clock, reading the limiter's fake one."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    def time(self) -> float:
        return self._clock.time()

    def monotonic(self) -> float:
        return self._clock.monotonic()


class CountingClient(BitrixClient):
    """The worker's client, telling the fake clock when requests are on their way."""

    def __init__(self, *, http: httpx.AsyncClient, auth: WebhookAuth) -> None:
        super().__init__(http=http, auth=auth)
        self._in_flight = InFlight()
        self.busy = self._in_flight.busy

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CommandAnswer:
        async with self._in_flight.counted():
            return await super().call(method, params)

    async def batch(self, commands: Any, *, halt: bool = False) -> BatchAnswer:
        async with self._in_flight.counted():
            return await super().batch(commands, halt=halt)


@dataclass
class Run:
    portal: RunningSandbox
    clock: FakeClock
    flow: MemoryFlow
    # seconds charged so far per method (the portal's account key), at each window's end
    charged: list[dict[str, float]] = field(default_factory=list)

    @property
    def rejections(self) -> int:
        return self.portal.state.counters.operation_limit_rejections

    def shares(self, method: str) -> list[float]:
        """The share of the limit charged to ``method`` in each whole window."""
        key = f"webhook:1:{method}"
        ends = [0.0, *(charged.get(key, 0.0) for charged in self.charged)]
        return [round((b - a) / LIMIT_S, 4) for a, b in itertools.pairwise(ends)]

    async def until_window(self, count: int) -> None:
        """Let time run until ``count`` windows have ended, sampling the portal's charges."""
        sampler = asyncio.create_task(self._sample(count))
        while not sampler.done():
            if not await self.clock.advance_to_next():
                await asyncio.sleep(0.001)
        await sampler

    async def until_settled(self, count: int, *, within_s: float) -> None:
        """Let time run until ``count`` commands are settled; fail after ``within_s``."""
        while len(self.flow.observer.ends) < count:
            assert self.clock.monotonic() < within_s, "not settled in time"
            if not await self.clock.advance_to_next():
                await asyncio.sleep(0.001)

    async def _sample(self, count: int) -> None:
        for window in range(1, count + 1):
            await self.clock.sleep(window * WINDOW_S - self.clock.monotonic())
            self.charged.append(dict(self.portal.state.counters.operating_charged_s))


def unscripted(job: Job) -> Decision:
    raise AssertionError("the sandbox answers, through the worker's own caller")


@asynccontextmanager
async def worker_against(config: SandboxConfig) -> AsyncIterator[Run]:
    clock = FakeClock()
    async with (
        running_sandbox(config, clock=SharedTime(clock)) as portal,
        make_http_client(timeout_s=10.0) as http,
    ):
        client = CountingClient(http=http, auth=WebhookAuth(portal.webhook_url))
        clock.wait_also_for(client.busy)
        limiter = CallLimiter(
            method=METHOD,
            budget=OperatingBudget(limit_s=LIMIT_S, window_s=WINDOW_S, clock=clock),
            pacer=RequestPacer(burst=50, rate_per_s=2.0, clock=clock),
        )
        caller = Caller(client=client, limiter=limiter, observer=QuietObserver())
        flow = MemoryFlow(unscripted, limiter=limiter, caller=caller, linger_s=0.0)
        async with flow.running():
            yield Run(portal, clock, flow)
            await flow.pipeline.drain()


def portal_config(charging: BatchCharging, *, limit_s: float = LIMIT_S) -> SandboxConfig:
    return SandboxConfig(
        seed_items=ITEMS,
        spa_types=(),
        operating_limit_s=limit_s,
        operating_window_s=WINDOW_S,
        operating_costs=(("crm.item.update", COST_S),),
        operating_cost_s=0.05,  # crm.item.fields and the rest: under the charging floor
        batch_charging=charging,
    )


def commands(count: int, *, alone_every: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """Title updates of distinct deals in turn; every ``alone_every``-th must go alone
    (a batch would rewrite its ``$result[...]``)."""
    made = []
    for n in range(1, count + 1):
        alone = alone_every and n % alone_every == 0
        title = f"pay $result[x] {n}" if alone else f"update {n}"
        made.append((f"m{n}", deal((n - 1) % ITEMS + 1, title)))
    return made


# Where a batch's commands are charged, in each way the portal may charge them.
BATCHES_CHARGED_TO = {"nested": "crm.item.update", "batch": "batch"}


@pytest.mark.parametrize("charging", ["nested", "batch"])
async def test_batches_use_the_budget_without_a_429_however_a_batch_is_charged(
    charging: BatchCharging,
) -> None:
    async with worker_against(portal_config(charging)) as run:
        for message_id, command in commands(70 * WINDOWS):
            await run.flow.deliver(command, message_id=message_id)
        await run.until_window(WINDOWS)
    shares = run.shares(BATCHES_CHARGED_TO[charging])
    assert run.rejections == 0
    assert run.flow.events("dead") == []
    assert min(shares) >= 0.95, shares
    assert max(shares) <= 1.0, shares


@pytest.mark.parametrize("charging", ["nested", "batch"])
async def test_single_calls_among_batches_use_the_budget_without_a_429(
    charging: BatchCharging,
) -> None:
    async with worker_against(portal_config(charging)) as run:
        for message_id, command in commands(100 * WINDOWS, alone_every=4):
            await run.flow.deliver(command, message_id=message_id)
        await run.until_window(WINDOWS)
    batches = run.shares(BATCHES_CHARGED_TO[charging])
    singles = run.shares("crm.item.update")
    assert run.rejections == 0
    assert run.flow.events("dead") == []
    assert min(batches) >= 0.95, batches
    assert max(batches + singles) <= 1.0, (batches, singles)


@pytest.mark.parametrize("charging", ["nested", "batch"])
async def test_a_portal_stricter_than_the_setting_refuses_calls_that_go_again_without_attempts(
    charging: BatchCharging,
) -> None:
    """The portal allows a third of what the worker was told: its 429s (for commands inside
    a batch, or for whole batches) pause the account, and every command goes again."""
    async with worker_against(portal_config(charging, limit_s=LIMIT_S / 3)) as run:
        sent = commands(100)
        for message_id, command in sent:
            await run.flow.deliver(command, message_id=message_id)
        await run.until_settled(len(sent), within_s=10 * WINDOW_S)
    events = run.flow.events("results")
    assert run.rejections > 0
    assert sorted(e["messageId"] for e in events) == sorted(m for m, _ in sent)
    assert {e["attempts"] for e in events} == {1}
    counters = run.portal.state.counters
    assert counters.saves == len(sent), "each applied once"
    if charging == "batch":
        assert counters.errors["OPERATION_TIME_LIMIT"] == run.rejections, "whole batches"
