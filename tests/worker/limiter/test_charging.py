"""Where a batch was charged, as its commands' reports show it."""

from __future__ import annotations

import pytest

from worker.limiter import OperatingReport
from worker.limiter.charging import BATCH, Evidence, read_batch

UPDATE = "crm.item.update"
AT = 1_800_000_600.0


def reports(*totals: float | None, reset_at: float = AT) -> list[OperatingReport]:
    return [OperatingReport(total, reset_at) for total in totals]


@pytest.mark.parametrize(
    ("seen", "evidence"),
    [
        # each command its method's running total: charged one by one
        (reports(0.2, 0.4, 0.6), Evidence(UPDATE, sure=True)),
        (reports(3.0, 3.0, 3.2), Evidence(UPDATE, sure=True)),  # a cheap command between
        # one total in every entry: the batch as a whole
        (reports(0.6, 0.6, 0.6), Evidence(BATCH, sure=False)),
        # nothing to tell by
        (reports(0.6), None),
        (reports(0.0, 0.0), None),  # nothing charged
        (reports(None, None), None),  # no totals reported
        ([], None),
        # a basket dropped out between two commands: their totals differ for that
        ([OperatingReport(5.0, AT), OperatingReport(4.0, AT + 6.0)], None),
    ],
)
def test_what_a_batch_s_reports_show(
    seen: list[OperatingReport], evidence: Evidence | None
) -> None:
    assert read_batch(UPDATE, seen) == evidence
