"""The model of a method's ten baskets: what is used, what drops out when, what the portal says."""

from __future__ import annotations

import pytest

from worker.limiter import Baskets

T0 = 1_800_000_000.0  # a multiple of the 6 s basket


def test_charges_drop_out_one_window_after_their_basket_started() -> None:
    baskets = Baskets(size_s=6.0)
    baskets.charge(T0 + 1, 2.0)
    baskets.charge(T0 + 7, 3.0)
    assert baskets.used(T0 + 59.9) == 5.0
    assert baskets.used(T0 + 60.0) == 3.0
    assert baskets.used(T0 + 66.0) == 0.0


def test_grace_keeps_a_basket_a_little_past_its_reset() -> None:
    baskets = Baskets(size_s=6.0, grace_s=0.25)
    baskets.charge(T0, 2.0)
    assert baskets.used(T0 + 60.2) == 2.0
    assert baskets.used(T0 + 60.25) == 0.0


def test_the_grid_is_taken_from_the_reported_reset_time() -> None:
    baskets = Baskets(size_s=6.0)
    baskets.align(T0 + 62.0)
    baskets.charge(T0 + 3.0, 1.0)
    assert baskets.next_drop(T0 + 3.0) == T0 + 62.0


def test_baskets_older_than_the_reported_oldest_are_forgotten() -> None:
    baskets = Baskets(size_s=6.0)
    baskets.charge(T0, 1.0)
    baskets.charge(T0 + 6, 2.0)
    baskets.align(T0 + 66.0)  # the portal's oldest basket is the one starting at T0 + 6
    assert baskets.used(T0 + 10) == 2.0


def test_a_higher_reported_total_goes_into_the_current_basket() -> None:
    baskets = Baskets(size_s=6.0)
    baskets.charge(T0, 1.0)
    assert baskets.reconcile(T0 + 30, 4.0, may_shrink=False) == pytest.approx(3.0)
    assert baskets.used(T0 + 61) == pytest.approx(3.0)


def test_a_lower_total_is_believed_only_when_it_may_shrink() -> None:
    baskets = Baskets(size_s=6.0)
    baskets.charge(T0, 2.0)
    baskets.charge(T0 + 6, 2.0)
    baskets.reconcile(T0 + 10, 3.0, may_shrink=False)
    assert baskets.used(T0 + 10) == 4.0
    baskets.reconcile(T0 + 10, 3.0, may_shrink=True)
    assert baskets.used(T0 + 10) == pytest.approx(3.0)
    # the excess is taken from the oldest basket, which drops first
    assert baskets.used(T0 + 60) == pytest.approx(2.0)


def test_first_room_waits_for_the_baskets_that_free_enough() -> None:
    baskets = Baskets(size_s=6.0)
    baskets.charge(T0, 6.0)
    baskets.charge(T0 + 30, 6.0)
    assert baskets.first_room(T0 + 31, 12.0, 1.0) == (T0 + 60, 6.0)
    assert baskets.first_room(T0 + 31, 12.0, 7.0) == (T0 + 90, 12.0)
    assert baskets.first_room(T0 + 31, 12.0, 13.0) is None


def test_calls_in_flight_count_as_charged_now() -> None:
    baskets = Baskets(size_s=6.0)
    assert baskets.first_room(T0, 12.0, 3.0, pending_s=10.0) == (T0 + 60, 12.0)
