"""One REST request from arrival to envelope: guards, limits, auth, method, ``time``.

The order copies what a caller of the cloud sees: HTTPS and manual blocks
first, then the request bucket (a batch counts once), then authorisation,
then the method. Each method call, single or nested in a batch, is checked
against and charged to its own operating-time budget.
"""

from __future__ import annotations

import asyncio
import time as _time
from dataclasses import dataclass
from typing import Any

from sandbox.auth import Identity, authenticate
from sandbox.batch import run_batch
from sandbox.envelope import error_body, success_body, time_block
from sandbox.errors import RestError
from sandbox.methods import METHODS, Call, Outcome
from sandbox.state import PortalState

__all__ = ["RestRequest", "handle_rest"]


@dataclass(frozen=True, slots=True)
class RestRequest:
    method: str
    params: dict[str, Any]
    webhook: tuple[str, str] | None  # (user_id, code) from the path; None for OAuth
    scheme: str = "http"


def _guard(state: PortalState, request: RestRequest) -> None:
    faults = state.faults
    if faults.require_https and request.scheme != "https":
        raise RestError("INVALID_REQUEST")
    if faults.overload:
        raise RestError("OVERLOAD_LIMIT")
    if faults.portal_error is not None:
        raise RestError(faults.portal_error)
    if state.limits_enabled and not state.bucket.try_acquire():
        state.counters.query_limit_rejections += 1
        raise RestError("QUERY_LIMIT_EXCEEDED")


def _execute(
    state: PortalState, who: Identity, method: str, params: dict[str, Any]
) -> tuple[Outcome, dict[str, Any]]:
    handler = METHODS.get(method)
    if handler is None:
        raise RestError("ERROR_METHOD_NOT_FOUND")
    state.counters.calls[method] += 1
    key = f"{who.key}:{method}"
    limited = state.limits_enabled
    if limited and state.operating.blocked(key):
        state.counters.operation_limit_rejections += 1
        raise RestError("OPERATION_TIME_LIMIT")
    start = state.clock.time()
    began = _time.perf_counter()
    cost = state.config.cost_of(method).draw(state.cost_rng)
    try:
        outcome = handler(Call(state, who.user_id, method), params)
    finally:
        if limited:
            charged = state.operating.charge(key, cost)
            state.counters.operating_charged_s[key] += charged
    elapsed = _time.perf_counter() - began
    time = time_block(
        start=start,
        finish=state.clock.time(),
        processing=cost if cost > 0 else elapsed,
        operating=state.operating.used(key) if limited else 0.0,
        operating_reset_at=state.operating.reset_at(key) if limited else start,
        tz=state.tz,
    )
    return outcome, time


def _batch(state: PortalState, who: Identity, params: dict[str, Any]) -> dict[str, Any]:
    state.counters.calls["batch"] += 1
    start = state.clock.time()
    began = _time.perf_counter()
    result = run_batch(
        params,
        execute=lambda method, args: _execute(state, who, method, args),
        max_commands=state.config.batch_max_commands,
    )
    time = time_block(
        start=start,
        finish=state.clock.time(),
        processing=_time.perf_counter() - began,
        operating=0.0,
        operating_reset_at=state.operating.reset_at(f"{who.key}:batch"),
        tz=state.tz,
    )
    return success_body(result, time)


async def handle_rest(state: PortalState, request: RestRequest) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for one REST request."""
    counters = state.counters
    counters.requests += 1
    counters.in_flight += 1
    try:
        return await _answer(state, request)
    finally:
        counters.in_flight -= 1


async def _answer(state: PortalState, request: RestRequest) -> tuple[int, dict[str, Any]]:
    counters = state.counters
    if state.faults.latency_ms > 0:
        await asyncio.sleep(state.faults.latency_ms / 1000.0)
    method = request.method.lower().removesuffix(".json")
    try:
        _guard(state, request)
        who = authenticate(state, request.webhook, request.params)
        if state.faults.random_failure(state.rng):
            raise RestError("INTERNAL_SERVER_ERROR")
        if method == "batch":
            status, body = 200, _batch(state, who, request.params)
        else:
            outcome, time = _execute(state, who, method, request.params)
            body = success_body(outcome.result, time, total=outcome.total, next_=outcome.next)
            status = 200
    except RestError as exc:
        status, body = exc.status, error_body(exc)
        counters.errors[exc.code or "(empty)"] += 1
    counters.statuses[status] += 1
    return status, body
