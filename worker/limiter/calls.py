"""Leave for one method's calls to a portal: its operating budget first, then the bucket.

The batcher asks `CallLimiter.admit` before it forms a group, so the call
leaves with as many commands as the budget lets it carry; the caller gives the
leave back with `settle` once the portal answered (or `release` when the call
is not made), and reports the portal's rate-limit answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.limiter.bucket import RequestPacer
from worker.limiter.operating import Lease, OperatingBudget
from worker.limiter.report import OperatingReport

__all__ = ["CallLimiter", "Leave"]


@dataclass(frozen=True, slots=True)
class Leave:
    """Leave to send one call: the budget's lease, and how long getting it took."""

    lease: Lease
    waited_s: float  # for the budget and the bucket together

    @property
    def commands(self) -> int:
        """How many commands the call may carry."""
        return self.lease.commands


class CallLimiter:
    """The portal's two limits, as one method's calls meet them."""

    def __init__(self, *, method: str, budget: OperatingBudget, pacer: RequestPacer) -> None:
        self.method = method
        self._budget = budget
        self._pacer = pacer

    async def admit(self, wanted: int) -> Leave:
        """Wait until a call of up to ``wanted`` commands may go: budget first, then bucket."""
        lease = await self._budget.acquire(self.method, wanted)
        waited = lease.waited_s + await self._pacer.acquire()
        return Leave(lease, waited)

    async def settle(
        self, leave: Leave, reports: Sequence[OperatingReport], *, duration_s: float
    ) -> None:
        """The call was made: the operating times the portal reported, and how long it took."""
        await self._budget.settle(leave.lease, reports, duration_s=duration_s)

    async def release(self, leave: Leave) -> None:
        """A leave that will not be used (its commands were handed back)."""
        await self._budget.settle(leave.lease, [])

    async def query_limited(self) -> None:
        """The portal answered 503 QUERY_LIMIT_EXCEEDED: the bucket is fuller than thought."""
        await self._pacer.on_rate_limited()

    async def time_limited(self) -> None:
        """The portal answered 429 OPERATION_TIME_LIMIT: the method waits for its baskets."""
        await self._budget.on_blocked(self.method, reset_at=None)

    async def remaining_s(self) -> float:
        """The method's operating time left in the window."""
        return await self._budget.remaining_s(self.method)
