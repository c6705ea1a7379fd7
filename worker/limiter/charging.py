"""Where a batch's operating time is charged: read from the portal's answers, not assumed.

The sources disagree. The official limits page: each command of a batch is
charged to its own method, and its ``result_time`` entry carries that method's
running total, growing from command to command. A field report from an
official SDK's maintainers: the portal charged the whole batch to the method
``batch``, and every ``result_time`` entry carried the same running total, the
batch's. A single (non-batch) call is charged to its own method either way.

So the budget keeps one account per method the portal charges (``batch`` is
one), and a batch goes to the account its answers show:

- commands of one batch reporting different totals in one window were charged
  one by one, each to its own method (sure: a batch charged as a whole reports
  one total);
- two or more reporting the same total above zero were charged together, to
  ``batch``; not sure, since per-command charging shows this too when every
  command after the first cost less than the portal's charging floor, so it
  never overrides a sure answer;
- a batch refused whole with 429 ``OPERATION_TIME_LIMIT`` was refused for
  ``batch`` (sure); a command refused inside a batch, for its own method (sure).

Until an answer shows it, a batch is taken to be charged per command, as the
official page says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.limiter.report import OperatingReport

__all__ = ["BATCH", "Evidence", "read_batch"]

BATCH = "batch"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one answer shows a batch of ``method``'s commands was charged to."""

    account: str  # ``method`` (per command) or ``BATCH`` (the batch as a whole)
    sure: bool


def read_batch(method: str, reports: Sequence[OperatingReport]) -> Evidence | None:
    """What the ``result_time`` reports of one batch's commands show; None if nothing."""
    totals = [r for r in reports if r.operating is not None]
    if len(totals) < 2:
        return None
    first = totals[0]
    if any(r.operating != first.operating and r.reset_at == first.reset_at for r in totals):
        return Evidence(method, sure=True)
    if all(r.operating == first.operating for r in totals) and (first.operating or 0.0) > 0:
        return Evidence(BATCH, sure=False)
    return None
