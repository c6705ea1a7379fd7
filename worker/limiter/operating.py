"""The operating-time budget: a method stops before the portal's limit, resumes as baskets free.

Bitrix24 blocks a method (429 ``OPERATION_TIME_LIMIT``) once its summed server
time in a ten-basket sliding window exceeds the limit. The budget keeps one
account per method the portal charges (``crm.item.update``; ``batch`` when the
portal charges a batch as a whole, see ``charging``). For each it learns the
cost of one command from the ``operating`` totals the portal reports, keeps a
model of the baskets (``ledger.Baskets``), reserves the expected cost of calls
in flight, and admits a call only when its expected cost fits. When it does
not, the call waits until enough old baskets have dropped out.

A call's reports are read as the portal charged them: one per command, each
its method's running total after that command (a single call, or a batch
charged per command: the cost is the growth from one to the next), or, for a
batch charged as a whole, one running total after the whole call (``together``:
the cost is the growth since the account's last report, spread over the
commands).

Until an account's cost is known, and after a 429, only one call of it is in
flight at a time, so the first reports teach the cost before more is spent.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.limiter.backends import MemoryBackend, StateBackend
from worker.limiter.charging import Evidence
from worker.limiter.clock import Clock, sleep_or_wake
from worker.limiter.cost import learn
from worker.limiter.ledger import BASKETS, Baskets
from worker.limiter.report import OperatingReport

__all__ = ["Lease", "MethodState", "OperatingBudget"]

_WAIT_FOR_SETTLE = -1.0


@dataclass(frozen=True, slots=True)
class Lease:
    """Leave to send one call of ``method`` with ``commands``; give it back with ``settle``."""

    id: str
    method: str
    commands: int
    reserved_s: float
    waited_s: float


@dataclass(slots=True)
class MethodState:
    """Everything the budget knows about one method."""

    baskets: Baskets
    cost_s: float | None = None
    server_s: float | None = None
    paused_until: float = -math.inf
    resync: bool = False
    last_reset_at: float | None = None
    in_flight: dict[str, tuple[float, float]] = field(default_factory=dict)
    # The account a batch of this method's commands is charged to, as answers showed
    # it (``charging``); None until one did.
    batch_charged_to: str | None = None

    def reserved_s(self) -> float:
        return sum(seconds for seconds, _ in self.in_flight.values())


class OperatingBudget:
    """Per-method admission against the portal's operating-time limit."""

    def __init__(
        self,
        *,
        limit_s: float,
        window_s: float,
        clock: Clock,
        headroom: float = 0.02,
        max_request_s: float = 20.0,
        prior_cost_s: float = 0.4,
        grace_s: float = 0.25,
        lease_ttl_s: float = 90.0,
        poll_s: float = 1.0,
        backend: StateBackend[MethodState] | None = None,
    ) -> None:
        """``limit_s`` per ``window_s`` is the portal's limit; ``headroom`` of it is left unplanned.

        ``max_request_s`` bounds one call's server time, well under the
        portal's 60 s cut-off. ``prior_cost_s`` sizes the first call of a method
        before any report. ``grace_s`` is waited past each reset for clock
        skew. A lease never settled stops counting after ``lease_ttl_s``.
        """
        if limit_s <= 0 or window_s <= 0 or max_request_s <= 0 or prior_cost_s <= 0:
            raise ValueError("limit_s, window_s, max_request_s and prior_cost_s must be positive")
        if not 0 <= headroom < 1:
            raise ValueError("headroom must be in [0, 1)")
        self._limit = limit_s
        self._room = limit_s * (1 - headroom)
        self._basket_s = window_s / BASKETS
        self._clock = clock
        self._max_request_s = max_request_s
        self._prior = prior_cost_s
        self._grace = grace_s
        self._ttl = lease_ttl_s
        self._poll = poll_s
        self._backend: StateBackend[MethodState] = backend or MemoryBackend()
        self._ids = (f"{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())
        self._queues: dict[str, asyncio.Lock] = {}
        self._settled: dict[str, asyncio.Event] = {}

    async def acquire(self, method: str, wanted: int) -> Lease:
        """Wait (in turn with other callers of ``method``) until a call fits, and reserve it.

        The lease's ``commands`` (at least 1, at most ``wanted``) is how many
        commands the call may carry; the rest wait for a later call.
        """
        started = self._clock.time()
        lease_id = next(self._ids)
        queue = self._queues.setdefault(method, asyncio.Lock())
        async with queue:
            while True:
                settled = self._settled.setdefault(method, asyncio.Event())
                wait, count, reserved = await self._backend.modify(
                    method, lambda s: self._admit(s, lease_id, wanted)
                )
                if wait == 0:
                    break
                await sleep_or_wake(
                    self._clock, self._poll if wait == _WAIT_FOR_SETTLE else wait, settled
                )
        waited = self._clock.time() - started
        return Lease(lease_id, method, count, reserved, waited)

    async def settle(
        self,
        lease: Lease,
        reports: Sequence[OperatingReport],
        *,
        duration_s: float | None = None,
        together: bool = False,
    ) -> None:
        """The call answered: release its reservation and learn from what the portal reported.

        ``reports`` are the ``time`` blocks of the commands charged to
        ``lease.method`` that ran, in command order (one for a single call; each
        ``result_time`` entry of a batch); empty when nothing ran. ``together``:
        they all carry one running total, the whole call's (a batch charged as
        a whole). ``duration_s`` is the request's server (or wall) time, which
        sizes later calls for the cut-off.
        """
        await self._backend.modify(
            lease.method, lambda s: self._fold(s, lease, reports, duration_s, together)
        )
        self._settled.pop(lease.method, asyncio.Event()).set()

    async def observe(
        self,
        method: str,
        reports: Sequence[OperatingReport],
        *,
        duration_s: float | None = None,
        together: bool = False,
    ) -> None:
        """Learn from a call charged to ``method`` made without a lease of ``method``."""
        lease = Lease("", method, len(reports), 0.0, 0.0)
        await self.settle(lease, reports, duration_s=duration_s, together=together)

    async def batch_account(self, method: str) -> str:
        """The account a batch of ``method``'s commands is charged to, as far as answers showed;
        ``method`` itself (the official rule) until one did."""
        return await self._backend.modify(method, self._batch_account) or method

    async def learn_batch_account(self, method: str, evidence: Evidence) -> str:
        """Keep what an answer showed a batch of ``method``'s commands was charged to;
        returns the account now believed.

        An answer that is not sure never overrides a sure one that said
        ``method``: per-command charging with cheap commands looks the same.
        """
        return await self._backend.modify(method, lambda s: self._keep_account(s, method, evidence))

    async def on_blocked(self, method: str, *, reset_at: float | None) -> None:
        """A 429 OPERATION_TIME_LIMIT came back: pause ``method`` until ``reset_at``.

        Without a reset time the pause lasts until the model's next basket drops
        out, or one basket's length. Afterwards a single call probes the window.
        """
        await self._backend.modify(method, lambda s: self._block(s, reset_at))

    async def max_commands(self, method: str, wanted: int) -> int:
        """How many commands the next call may carry (at least 1, at most ``wanted``).

        Bounded by the server-time cap and by the budget the call will find
        when it is admitted: now, or after the next baskets drop out.
        """
        return await self._backend.modify(method, lambda s: self._size(s, wanted))

    async def remaining_s(self, method: str) -> float:
        """Seconds of the limit neither used in the window nor reserved by calls in flight."""
        return await self._backend.modify(method, self._remaining)

    async def cost_s(self, method: str) -> float | None:
        """The learned operating seconds of one command, ``None`` before any report."""
        return await self._backend.modify(method, self._cost)

    def _fresh(self, state: MethodState | None) -> MethodState:
        now = self._clock.time()
        if state is None:
            return MethodState(Baskets(self._basket_s, self._grace))
        state.baskets.expire(now)
        for lease_id in [k for k, (_, until) in state.in_flight.items() if until <= now]:
            del state.in_flight[lease_id]
        return state

    def _admit(
        self, state: MethodState | None, lease_id: str, wanted: int
    ) -> tuple[MethodState, tuple[float, int, float]]:
        state = self._fresh(state)
        now = self._clock.time()
        if (state.cost_s is None or state.resync) and state.in_flight:
            return state, (_WAIT_FOR_SETTLE, 0, 0.0)
        at, count = self._plan(state, now, wanted)
        if at > now:
            return state, (at - now, 0, 0.0)
        reserved = count * (self._prior if state.cost_s is None else state.cost_s)
        state.in_flight[lease_id] = (reserved, now + self._ttl)
        return state, (0.0, count, reserved)

    def _plan(self, state: MethodState, now: float, wanted: int) -> tuple[float, int]:
        """When the next call can go, and how many of ``wanted`` commands it may carry then."""
        start = max(now, state.paused_until)
        cost = self._prior if state.cost_s is None else state.cost_s
        server = cost if state.server_s is None else state.server_s
        count = wanted
        if server > 0:
            count = min(count, _whole(self._max_request_s / server))
        if state.resync:
            count = 1
        if cost <= 0:
            return start, max(1, count)
        found = state.baskets.first_room(
            start, self._room, min(cost, self._room), pending_s=state.reserved_s()
        )
        if found is None:
            return start, 1
        at, free = found
        return at, max(1, min(count, _whole(free / cost)))

    def _fold(
        self,
        state: MethodState | None,
        lease: Lease,
        reports: Sequence[OperatingReport],
        duration_s: float | None,
        together: bool,
    ) -> tuple[MethodState, None]:
        state = self._fresh(state)
        now = self._clock.time()
        state.in_flight.pop(lease.id, None)
        # Reports of a batch charged as a whole are one total: the growth it shows is
        # spread over the commands that ran.
        per = len(reports) if together else 1
        if together:
            reports = reports[-1:]
        # A lone report's growth is its commands' cost only if nothing else of the method
        # ran since the last report, no basket dropped out, and the report is not stale.
        alone = len(reports) == 1 and not state.in_flight and not state.resync
        alone = alone and state.last_reset_at is not None
        steps: list[float] = []
        previous: OperatingReport | None = None
        for report in reports:
            same_window = report.reset_at == state.last_reset_at
            difference = self._reconcile(state, now, report)
            if report.operating is None:
                state.baskets.charge(now, per * (state.cost_s or self._prior))
            elif previous is None:
                if alone and same_window and difference > -1e-9:
                    steps.append(difference / per)
            elif previous.operating is not None and previous.reset_at == report.reset_at:
                steps.append(report.operating - previous.operating)
            previous = report
            if report.reset_at is not None:
                state.last_reset_at = report.reset_at
        if steps:
            state.cost_s = learn(state.cost_s, sum(steps) / len(steps))
        ran = per * len(reports) or lease.commands
        if duration_s is not None and duration_s >= 0 and ran > 0:
            state.server_s = learn(state.server_s, duration_s / ran)
        return state, None

    def _reconcile(self, state: MethodState, now: float, report: OperatingReport) -> float:
        shrinks = state.resync or report.reset_at is None or report.reset_at != state.last_reset_at
        if report.reset_at is not None:
            state.baskets.align(report.reset_at)
        if report.operating is None:
            return 0.0
        difference = state.baskets.reconcile(now, report.operating, may_shrink=shrinks)
        state.resync = False
        return difference

    def _block(self, state: MethodState | None, reset_at: float | None) -> tuple[MethodState, None]:
        state = self._fresh(state)
        now = self._clock.time()
        if reset_at is not None:
            until = reset_at + self._grace
        else:
            until = state.baskets.next_drop(now) or now + self._basket_s
        state.paused_until = max(state.paused_until, until)
        state.resync = True
        return state, None

    def _batch_account(self, state: MethodState | None) -> tuple[MethodState, str | None]:
        state = self._fresh(state)
        return state, state.batch_charged_to

    def _keep_account(
        self, state: MethodState | None, method: str, evidence: Evidence
    ) -> tuple[MethodState, str]:
        state = self._fresh(state)
        if evidence.sure or state.batch_charged_to != method:
            state.batch_charged_to = evidence.account
        return state, state.batch_charged_to or method

    def _size(self, state: MethodState | None, wanted: int) -> tuple[MethodState, int]:
        state = self._fresh(state)
        return state, self._plan(state, self._clock.time(), wanted)[1]

    def _cost(self, state: MethodState | None) -> tuple[MethodState, float | None]:
        state = self._fresh(state)
        return state, state.cost_s

    def _remaining(self, state: MethodState | None) -> tuple[MethodState, float]:
        state = self._fresh(state)
        now = self._clock.time()
        if now < state.paused_until:
            return state, 0.0
        return state, max(0.0, self._limit - state.baskets.used(now) - state.reserved_s())


def _whole(value: float) -> int:
    """``floor`` that does not lose a unit to float error (11.999999999 counts as 12)."""
    return math.floor(value + 1e-6)
