"""Operating cost of a call: a fixed figure, or a range drawn per call from a seeded source."""

from __future__ import annotations

import random

import pytest

from sandbox.limits import OperatingCost


def test_a_single_figure_is_a_fixed_cost() -> None:
    assert OperatingCost.parse("3.2") == OperatingCost(3.2, 3.2)
    assert str(OperatingCost.parse("3.2")) == "3.2"


def test_low_dash_high_is_a_range() -> None:
    cost = OperatingCost.parse(" 0.05-0.8 ")
    assert (cost.low_s, cost.high_s) == (0.05, 0.8)
    assert cost.mean_s == pytest.approx(0.425)
    assert str(cost) == "0.05-0.8"


@pytest.mark.parametrize("text", ["", "fast", "0.8-0.05", "-1", "0.1-", "nan", "0.1-inf"])
def test_a_bad_cost_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"SECONDS or LOW-HIGH|low <= high|finite"):
        OperatingCost.parse(text)


def test_a_range_draws_within_its_bounds_and_repeats_with_the_seed() -> None:
    cost = OperatingCost(0.05, 0.8)
    first, second = random.Random(11), random.Random(11)
    draws = [cost.draw(first) for _ in range(200)]
    assert [cost.draw(second) for _ in range(200)] == draws
    assert all(0.05 <= d <= 0.8 for d in draws)
    assert min(draws) < 0.15, "the draws reach the low end"
    assert max(draws) > 0.7, "and the high end"


def test_a_fixed_cost_leaves_the_random_source_untouched() -> None:
    rng = random.Random(5)
    assert OperatingCost.fixed(0.5).draw(rng) == 0.5
    assert rng.random() == random.Random(5).random()
