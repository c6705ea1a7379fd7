"""The limiter's state shared through Redis: how each state is stored, and a portal's backends.

Bitrix24's limits belong to a portal, so every worker serving one portal
(replicas, and deployments configured differently) must pace against one
bucket and one operating-time budget. ``shared_backends`` gives both, keyed by
the portal's host name.

Values are JSON. JSON has no infinities, so a float that is not finite is
stored as a string (``"-inf"``); basket indexes, JSON object keys, are
stored as strings and read back as ints.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson
from redis.asyncio import Redis

from worker.limiter.backends.availability import Availability
from worker.limiter.backends.redis import Codec, RedisBackend
from worker.limiter.bucket import PacerState
from worker.limiter.ledger import Baskets
from worker.limiter.operating import MethodState

__all__ = ["METHOD_STATE", "PACER_STATE", "SharedBackends", "shared_backends"]


class SharedBackends(NamedTuple):
    """The two backends of one portal; unpack as ``pacer, budget = shared_backends(...)``."""

    pacer: RedisBackend[PacerState]
    budget: RedisBackend[MethodState]

    @property
    def reachable(self) -> bool:
        """Whether Redis answered the last command (for readiness)."""
        return self.pacer.reachable and self.budget.reachable


def shared_backends(
    redis: Redis,
    *,
    scope: str,
    ttl_s: float = 86_400.0,
    timeout_s: float = 5.0,
    retry_initial_s: float = 0.2,
    retry_max_s: float = 5.0,
) -> SharedBackends:
    """The pacer's and the budget's backends for the portal named ``scope`` (its host name).

    Pass them as ``RequestPacer(backend=...)`` and ``OperatingBudget(backend=...)``.
    """
    availability = Availability(
        scope=scope, timeout_s=timeout_s, retry_initial_s=retry_initial_s, retry_max_s=retry_max_s
    )
    return SharedBackends(
        RedisBackend(redis, scope=scope, codec=PACER_STATE, ttl_s=ttl_s, availability=availability),
        RedisBackend(
            redis, scope=scope, codec=METHOD_STATE, ttl_s=ttl_s, availability=availability
        ),
    )


def _float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _optional(value: float | None) -> float | str | None:
    return None if value is None else _float(value)


def _read(value: Any) -> float:
    return float(value)


def _read_optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _encode_pacer(state: PacerState) -> bytes:
    return orjson.dumps(
        {
            "level": _float(state.level),
            "at": _float(state.at),
            "share": _float(state.share),
            "cut_at": _float(state.cut_at),
        }
    )


def _decode_pacer(raw: bytes) -> PacerState:
    fields = orjson.loads(raw)
    return PacerState(
        level=_read(fields["level"]),
        at=_read(fields["at"]),
        share=_read(fields["share"]),
        cut_at=_read(fields["cut_at"]),
    )


def _encode_method(state: MethodState) -> bytes:
    baskets = state.baskets
    return orjson.dumps(
        {
            "baskets": {
                "size_s": _float(baskets.size_s),
                "grace_s": _float(baskets.grace_s),
                "phase": _optional(baskets.phase),
                "charged": {str(i): _float(s) for i, s in baskets.charged.items()},
            },
            "cost_s": _optional(state.cost_s),
            "server_s": _optional(state.server_s),
            "paused_until": _float(state.paused_until),
            "resync": state.resync,
            "last_reset_at": _optional(state.last_reset_at),
            "in_flight": {k: [_float(s), _float(u)] for k, (s, u) in state.in_flight.items()},
            "batch_charged_to": state.batch_charged_to,
        }
    )


def _decode_method(raw: bytes) -> MethodState:
    fields = orjson.loads(raw)
    baskets = fields["baskets"]
    resync = fields["resync"]
    if not isinstance(resync, bool):
        raise TypeError("resync is not a boolean")
    return MethodState(
        baskets=Baskets(
            size_s=_read(baskets["size_s"]),
            grace_s=_read(baskets["grace_s"]),
            phase=_read_optional(baskets["phase"]),
            charged={int(i): _read(s) for i, s in baskets["charged"].items()},
        ),
        cost_s=_read_optional(fields["cost_s"]),
        server_s=_read_optional(fields["server_s"]),
        paused_until=_read(fields["paused_until"]),
        resync=resync,
        last_reset_at=_read_optional(fields["last_reset_at"]),
        in_flight={str(k): (_read(s), _read(u)) for k, (s, u) in fields["in_flight"].items()},
        # absent from state written before batches could be charged as a whole
        batch_charged_to=_read_account(fields.get("batch_charged_to")),
    )


def _read_account(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("batch_charged_to is not a method name")
    return value


PACER_STATE: Codec[PacerState] = Codec("pacer", _encode_pacer, _decode_pacer)
METHOD_STATE: Codec[MethodState] = Codec("operating", _encode_method, _decode_method)
