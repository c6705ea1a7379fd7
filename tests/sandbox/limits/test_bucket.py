"""The leaky bucket, driven by a manual clock: no sleeping."""

from __future__ import annotations

import pytest

from sandbox.clock import ManualClock
from sandbox.limits import LeakyBucket


def test_the_request_after_the_burst_is_refused() -> None:
    bucket = LeakyBucket(burst=50, drain_per_s=2.0, clock=ManualClock())
    assert all(bucket.try_acquire() for _ in range(50))
    assert bucket.try_acquire() is False
    assert bucket.level == 50


def test_the_bucket_drains_at_the_configured_rate() -> None:
    clock = ManualClock()
    bucket = LeakyBucket(burst=50, drain_per_s=2.0, clock=clock)
    for _ in range(50):
        bucket.try_acquire()
    clock.advance(0.49)
    assert bucket.try_acquire() is False
    clock.advance(0.01)
    assert bucket.try_acquire() is True
    assert bucket.try_acquire() is False
    clock.advance(10.0)
    assert sum(bucket.try_acquire() for _ in range(25)) == 20


def test_refused_requests_do_not_fill_the_bucket() -> None:
    clock = ManualClock()
    bucket = LeakyBucket(burst=2, drain_per_s=1.0, clock=clock)
    bucket.try_acquire()
    bucket.try_acquire()
    for _ in range(100):
        bucket.try_acquire()
    clock.advance(1.0)
    assert bucket.try_acquire() is True


def test_an_idle_bucket_empties_and_never_goes_negative() -> None:
    clock = ManualClock()
    bucket = LeakyBucket(burst=3, drain_per_s=5.0, clock=clock)
    bucket.try_acquire()
    clock.advance(3600)
    assert bucket.level == 0
    assert sum(bucket.try_acquire() for _ in range(5)) == 3


def test_enterprise_figures() -> None:
    clock = ManualClock()
    bucket = LeakyBucket(burst=250, drain_per_s=5.0, clock=clock)
    assert sum(bucket.try_acquire() for _ in range(300)) == 250
    clock.advance(1.0)
    assert sum(bucket.try_acquire() for _ in range(10)) == 5


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        LeakyBucket(burst=0, drain_per_s=1.0, clock=ManualClock())
