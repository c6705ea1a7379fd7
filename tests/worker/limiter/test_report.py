"""Reading a response's ``time`` block for the operating-time budget."""

from __future__ import annotations

from worker.limiter import OperatingReport


def test_operating_and_reset_time_are_read() -> None:
    block = {"duration": 0.4, "operating": 3.3, "operating_reset_at": 1_800_000_060}
    assert OperatingReport.from_time(block) == OperatingReport(3.3, 1_800_000_060.0)


def test_missing_fields_and_a_missing_block_read_as_none() -> None:
    assert OperatingReport.from_time({"duration": 0.4}) == OperatingReport(None, None)
    assert OperatingReport.from_time(None) == OperatingReport(None, None)


def test_numbers_sent_as_text_are_read_and_junk_is_not() -> None:
    block = {"operating": "0.6", "operating_reset_at": "soon"}
    assert OperatingReport.from_time(block) == OperatingReport(0.6, None)
    assert OperatingReport.from_time({"operating": True}).operating is None
