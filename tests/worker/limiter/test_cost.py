"""Cost estimates rise at once and fall only part of the way."""

from __future__ import annotations

import pytest

from worker.limiter.cost import learn


def test_the_first_sample_is_the_estimate() -> None:
    assert learn(None, 0.2) == 0.2


def test_a_higher_sample_is_taken_at_once() -> None:
    assert learn(0.2, 0.5) == 0.5


def test_a_lower_sample_pulls_the_estimate_down_part_way() -> None:
    assert learn(0.4, 0.0, fall=0.25) == pytest.approx(0.3)


def test_a_negative_sample_counts_as_free() -> None:
    assert learn(None, -1.0) == 0.0
