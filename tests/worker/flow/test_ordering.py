"""The ordering gate: one command per item at a time, in arrival order."""

from __future__ import annotations

from typing import Any, Literal

from worker.flow.jobs import Job
from worker.flow.ordering import OrderingGate

KEY = (2, 351)


def job(message_id: str, source: Literal["update", "retry"] = "update") -> Job:
    message: Any = object()
    return Job(message=message, message_id=message_id, source=source)


def test_first_command_for_an_item_runs_and_later_ones_wait_in_order() -> None:
    gate = OrderingGate()
    assert gate.admit(KEY, job("a"))
    assert not gate.admit(KEY, job("b"))
    assert not gate.admit(KEY, job("c"))
    assert gate.admit((2, 352), job("other"))  # other items are not held
    assert len(gate) == 2
    assert gate.release(KEY).message_id == "b"  # type: ignore[union-attr]
    assert gate.release(KEY).message_id == "c"  # type: ignore[union-attr]
    assert gate.release(KEY) is None
    assert gate.admit(KEY, job("d"))  # the lane was freed


def test_a_parked_item_waits_for_its_retry_copy() -> None:
    gate = OrderingGate()
    gate.admit(KEY, job("a"))
    gate.park(KEY, "a", until=100.0)
    assert not gate.admit(KEY, job("b"))  # the retry of "a" has not come back
    assert gate.release(KEY) is None
    assert gate.admit(KEY, job("a", source="retry"))  # the copy returns and runs first
    assert gate.release(KEY).message_id == "b"  # type: ignore[union-attr]


def test_a_retry_copy_unknown_to_the_gate_goes_before_waiting_commands() -> None:
    gate = OrderingGate()
    gate.admit(KEY, job("x"))
    gate.admit(KEY, job("y"))
    gate.admit(KEY, job("old", source="retry"))
    assert gate.release(KEY).message_id == "old"  # type: ignore[union-attr]


def test_parked_lanes_expire_when_the_copy_never_returns() -> None:
    gate = OrderingGate()
    gate.admit(KEY, job("a"))
    gate.park(KEY, "a", until=10.0)
    gate.admit(KEY, job("b"))
    assert gate.expire_parked(now=5.0) == []
    assert [j.message_id for j in gate.expire_parked(now=11.0)] == ["b"]
