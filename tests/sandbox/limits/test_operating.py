"""The operating-time ledger: ten baskets over the window, driven by a manual clock."""

from __future__ import annotations

from sandbox.clock import ManualClock
from sandbox.limits import OperatingLedger


def ledger(clock: ManualClock, **kwargs: float) -> OperatingLedger:
    options = {"limit_s": 480.0, "window_s": 600.0, "min_charge_s": 0.1} | kwargs
    return OperatingLedger(clock=clock, **options)


def test_blocked_only_once_the_sum_exceeds_the_limit() -> None:
    clock = ManualClock()
    ops = ledger(clock)
    for _ in range(4):
        assert ops.blocked("m") is False
        ops.charge("m", 120.0)
    assert ops.used("m") == 480.0
    assert ops.blocked("m") is False, "exactly at the limit is still allowed"
    ops.charge("m", 0.5)
    assert ops.blocked("m") is True


def test_methods_and_callers_have_their_own_budgets() -> None:
    ops = ledger(ManualClock())
    ops.charge("webhook:crm.item.update", 500.0)
    assert ops.blocked("webhook:crm.item.update") is True
    assert ops.blocked("webhook:crm.item.get") is False
    assert ops.blocked("app:crm.item.update") is False


def test_cheap_calls_are_not_charged() -> None:
    ops = ledger(ManualClock())
    assert ops.charge("m", 0.099) == 0.0
    assert ops.charge("m", 0.1) == 0.1
    assert ops.used("m") == 0.1


def test_old_baskets_drop_out_of_the_window() -> None:
    clock = ManualClock()  # starts on a minute boundary
    ops = ledger(clock)
    ops.charge("m", 300.0)
    clock.advance(60)
    ops.charge("m", 200.0)
    assert ops.blocked("m") is True
    assert ops.reset_at("m") == clock.time() - 60 + 600
    clock.advance(539.9)
    assert ops.blocked("m") is True
    clock.advance(0.1)
    assert ops.used("m") == 200.0
    assert ops.blocked("m") is False
    assert ops.reset_at("m") == clock.time() + 60


def test_reset_at_without_charges_is_a_window_ahead() -> None:
    clock = ManualClock()
    assert ledger(clock).reset_at("m") == clock.time() + 600


def test_custom_window_uses_a_tenth_of_it_per_basket() -> None:
    clock = ManualClock()
    ops = ledger(clock, limit_s=10.0, window_s=100.0)
    ops.charge("m", 11.0)
    assert ops.blocked("m") is True
    clock.advance(100)
    assert ops.blocked("m") is False
    assert ops.snapshot() == {"m": 0.0}
