"""Stored state reads back as it was written, and a portal's two backends share one scope."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from worker.limiter import (
    METHOD_STATE,
    PACER_STATE,
    Baskets,
    FakeClock,
    MethodState,
    OperatingBudget,
    PacerState,
    RequestPacer,
    shared_backends,
)

times = st.floats(allow_nan=False)
optional_times = st.none() | times
pacer_states = st.builds(PacerState, level=times, at=times, share=times, cut_at=times)
baskets = st.builds(
    Baskets,
    size_s=times,
    grace_s=times,
    phase=optional_times,
    charged=st.dictionaries(st.integers(-(2**53), 2**53), times),
)
method_states = st.builds(
    MethodState,
    baskets=baskets,
    cost_s=optional_times,
    server_s=optional_times,
    paused_until=times,
    resync=st.booleans(),
    last_reset_at=optional_times,
    in_flight=st.dictionaries(st.text(), st.tuples(times, times)),
    batch_charged_to=st.none() | st.text(),
)


@given(pacer_states)
def test_a_pacer_state_reads_back_as_written(state: PacerState) -> None:
    assert PACER_STATE.decode(PACER_STATE.encode(state)) == state


@given(method_states)
def test_a_method_state_reads_back_as_written(state: MethodState) -> None:
    assert METHOD_STATE.decode(METHOD_STATE.encode(state)) == state


def test_infinities_are_kept_where_json_has_none() -> None:
    fresh = MethodState(Baskets(6.0))
    assert METHOD_STATE.decode(METHOD_STATE.encode(fresh)).paused_until == -math.inf
    assert PACER_STATE.decode(PACER_STATE.encode(PacerState())).cut_at == -math.inf
    assert b'"-inf"' in PACER_STATE.encode(PacerState())


def test_a_method_state_stored_before_batch_charging_was_kept_reads_back() -> None:
    stored = orjson.loads(METHOD_STATE.encode(MethodState(Baskets(6.0))))
    del stored["batch_charged_to"]
    assert METHOD_STATE.decode(orjson.dumps(stored)).batch_charged_to is None


@pytest.mark.parametrize(
    "raw", [b"not json", b"{}", b'{"level": "x", "at": 0, "share": 1, "cut_at": 0}', b"[]"]
)
def test_a_value_not_in_the_format_is_refused(raw: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        PACER_STATE.decode(raw)


@pytest.mark.redis
async def test_the_pacer_and_the_budget_of_a_portal_share_one_scope(
    redis: Redis, scope: str
) -> None:
    clock = FakeClock()
    pacer_backend, budget_backend = shared_backends(redis, scope=scope)
    pacer = RequestPacer(burst=50, rate_per_s=2.0, clock=clock, backend=pacer_backend)
    budget = OperatingBudget(limit_s=480.0, window_s=600.0, clock=clock, backend=budget_backend)
    await pacer.acquire()
    await budget.acquire("crm.item.update", 10)
    keys = {key.decode() async for key in redis.scan_iter(match=f"b24-worker:limiter:{scope}:*")}
    assert keys == {
        f"b24-worker:limiter:{scope}:pacer:portal",
        f"b24-worker:limiter:{scope}:operating:crm.item.update",
    }
    assert shared_backends(redis, scope=scope).reachable
