"""One REST request from arrival to envelope: guards, limits, auth, method, ``time``.

The order copies what a caller of the cloud sees: HTTPS and manual blocks
first, then the request bucket (a batch counts once), then authorisation,
then the method. A single call is checked against and charged to its own
method's operating-time budget. What a batch is charged to is disputed, so it
is an option (``batch_charging``): ``nested`` (the official limits page) checks
and charges each nested command to its own method, and the outer ``batch``
not at all; ``batch`` (a field report from an official SDK's maintainers)
checks the method ``batch`` before the batch runs and charges it the sum of
its commands' costs once they ran, and every nested ``result_time`` entry
reports that running total.
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


def _admit(state: PortalState, key: str) -> None:
    """Refuse a call whose method's window is over the limit (429, no ``Retry-After``)."""
    if state.limits_enabled and state.operating.blocked(key):
        state.counters.operation_limit_rejections += 1
        raise RestError("OPERATION_TIME_LIMIT")


def _charge(state: PortalState, key: str, seconds: float) -> None:
    if state.limits_enabled:
        state.counters.operating_charged_s[key] += state.operating.charge(key, seconds)


def _execute(
    state: PortalState,
    who: Identity,
    method: str,
    params: dict[str, Any],
    *,
    batch_costs: list[float] | None = None,
) -> tuple[Outcome, dict[str, Any]]:
    """Run one call. Inside a batch charged as a whole, ``batch_costs`` collects the
    call's cost instead: its own method is then neither checked nor charged."""
    handler = METHODS.get(method)
    if handler is None:
        raise RestError("ERROR_METHOD_NOT_FOUND")
    state.counters.calls[method] += 1
    key = f"{who.key}:{method}"
    if batch_costs is None:
        _admit(state, key)
    limited = state.limits_enabled
    start = state.clock.time()
    began = _time.perf_counter()
    cost = state.config.cost_of(method).draw(state.cost_rng)
    try:
        outcome = handler(Call(state, who.user_id, method), params)
    finally:
        if batch_costs is None:
            _charge(state, key, cost)
        else:
            batch_costs.append(cost)
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
    key = f"{who.key}:batch"
    whole = state.config.batch_charging == "batch"
    if whole:
        _admit(state, key)
    costs: list[float] | None = [] if whole else None
    times: list[dict[str, Any]] = []

    def execute(method: str, args: dict[str, Any]) -> tuple[Outcome, dict[str, Any]]:
        outcome, time = _execute(state, who, method, args, batch_costs=costs)
        times.append(time)
        return outcome, time

    start = state.clock.time()
    began = _time.perf_counter()
    result = run_batch(params, execute=execute, max_commands=state.config.batch_max_commands)
    operating, processing = 0.0, _time.perf_counter() - began
    if costs is not None:
        # The batch is one call of the method `batch`: charged what its commands cost
        # (if that reaches the floor), and each command reports that running total.
        processing = sum(costs) or processing
        _charge(state, key, sum(costs))
        if state.limits_enabled:
            operating = state.operating.used(key)
            for time in times:
                time["operating"] = round(operating, 6)
                time["operating_reset_at"] = int(state.operating.reset_at(key))
    time = time_block(
        start=start,
        finish=state.clock.time(),
        processing=processing,
        operating=operating,
        operating_reset_at=state.operating.reset_at(key),
        tz=state.tz,
    )
    return success_body(result, time)


async def handle_rest(state: PortalState, request: RestRequest) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for one REST request."""
    counters = state.counters
    counters.arrived()
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
