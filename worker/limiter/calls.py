"""Leave for one method's calls to a portal: its operating budget first, then the bucket.

The batcher asks `CallLimiter.admit` before it forms a group, so the call
leaves with as many commands as the budget lets it carry; the caller gives the
leave back with `settle` once the portal answered (or `release` when the call
is not made), and reports the portal's rate-limit answers.

A call is admitted against the account the portal will charge it to
(`charging`): a single call against its method, a batch against the account
its batches were last seen charged to (the method, until an answer shows the
portal charges the whole batch to ``batch``). When that account is ``batch``
the leave says so (`Leave.as_batch`) and the call goes as a ``batch`` even
with one command, so it is charged where it was admitted. Its answer is then
charged to the account it shows, and what it shows is kept for the next
batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from worker.limiter.bucket import RequestPacer
from worker.limiter.charging import BATCH, Evidence, read_batch
from worker.limiter.operating import Lease, OperatingBudget
from worker.limiter.report import OperatingReport

__all__ = ["CallLimiter", "Leave", "Refused"]

# What a 429 answered: a single call, a whole batch, or one command inside a batch.
Refused = Literal["call", "batch", "command"]


@dataclass(frozen=True, slots=True)
class Leave:
    """Leave to send one call: the budget's lease, and how long getting it took."""

    lease: Lease
    waited_s: float  # for the budget and the bucket together
    # The call goes as `batch` even with one command: it was admitted against the
    # account the portal charges whole batches to.
    as_batch: bool = False

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
        """Wait until a call of up to ``wanted`` commands may go: budget first, then bucket.

        ``wanted`` above 1 asks for a batch, 1 for a single call.
        """
        waited = 0.0
        while True:
            account = await self._account(wanted)
            lease = await self._budget.acquire(account, wanted)
            waited += lease.waited_s
            # An answer that came in while this call waited may have shown that batches
            # are charged elsewhere: then it waits again, on that account.
            if await self._account(wanted) == account:
                break
            await self._budget.settle(lease, [])
        waited += await self._pacer.acquire()
        return Leave(lease, waited, as_batch=account != self.method)

    async def _account(self, wanted: int) -> str:
        """The account a call of ``wanted`` commands will be charged to."""
        if wanted == 1:
            return self.method
        return await self._budget.batch_account(self.method)

    async def settle(
        self,
        leave: Leave,
        reports: Sequence[OperatingReport],
        *,
        duration_s: float,
        batch: bool = False,
    ) -> str:
        """The call was made (as a ``batch`` when ``batch``): the operating times the portal
        reported, and how long it took. Returns the account it was charged to."""
        lease = leave.lease
        account = self.method
        if batch:
            evidence = read_batch(self.method, reports)
            if evidence is None:
                account = lease.method
            else:
                account = await self._budget.learn_batch_account(self.method, evidence)
        together = account == BATCH
        if account == lease.method:
            await self._budget.settle(lease, reports, duration_s=duration_s, together=together)
            return account
        # Charged elsewhere than admitted: count it there first, then free the lease.
        await self._budget.observe(account, reports, duration_s=duration_s, together=together)
        await self._budget.settle(lease, [])
        return account

    async def release(self, leave: Leave) -> None:
        """A leave that will not be used (its commands were handed back): its budget and
        its request go back, as the portal never saw the call."""
        await self._budget.settle(leave.lease, [])
        await self._pacer.refund()

    async def query_limited(self) -> None:
        """The portal answered 503 QUERY_LIMIT_EXCEEDED: the bucket is fuller than thought."""
        await self._pacer.on_rate_limited()

    async def time_limited(self, scope: Refused = "call") -> None:
        """The portal answered 429 OPERATION_TIME_LIMIT: the account waits for its baskets.

        ``scope`` is what was refused: a single ``call`` (its method), a whole
        ``batch`` (the method ``batch``: the portal charges batches as a whole),
        or a ``command`` inside a batch (its method: it charges them one by one).
        """
        account = self.method
        if scope != "call":
            evidence = Evidence(BATCH if scope == "batch" else self.method, sure=True)
            account = await self._budget.learn_batch_account(self.method, evidence)
        await self._budget.on_blocked(account, reset_at=None)

    async def remaining_s(self, account: str | None = None) -> float:
        """The operating time left in the window of ``account`` (the method's by default)."""
        return await self._budget.remaining_s(account or self.method)
