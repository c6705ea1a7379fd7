"""Request pacing: a token bucket that mirrors the portal's leaky bucket.

Bitrix24 counts every request (a ``batch`` counts once) into a bucket that
drains at Y per second and answers 503 ``QUERY_LIMIT_EXCEEDED`` above X. The
pacer keeps its own copy of that bucket: a request is counted when its token
is taken, just before it is sent, so requests in flight already fill it. The
whole burst is usable at once; after that tokens come at the drain rate,
less a small margin because the portal counts a request when it arrives.
On a 503 the copy is set to full and the rate is cut, then recovers linearly.

The copy is kept in unix time (``clock.time()``), so that processes sharing it
through a backend agree on what its times mean. Time never runs backwards for
the copy: a clock behind its last change (stepped back, or a host running
behind another) drains nothing until it catches up, so pacing only slows, by
at most the step. A step forward drains the copy once by the step, which at
worst grants one burst early; the portal's 503 and the cut then correct it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace

from worker.limiter.backends import MemoryBackend, StateBackend
from worker.limiter.clock import Clock
from worker.limiter.turns import Turn

__all__ = ["PacerState", "RequestPacer"]

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class PacerState:
    """The pacer's copy of the portal bucket at unix time ``at``, and its share of the full rate."""

    level: float = 0.0
    at: float = 0.0
    share: float = 1.0
    cut_at: float = -math.inf


class RequestPacer:
    """Hands out one token per request, in arrival order, never more than the portal drains."""

    def __init__(
        self,
        *,
        burst: int,
        rate_per_s: float,
        clock: Clock,
        reserve: int = 0,
        margin: float = 0.01,
        headroom_s: float = 0.1,
        cut_to: float = 0.75,
        min_share: float = 0.25,
        recovery_per_s: float = 0.0125,
        hold_s: float = 2.0,
        backend: StateBackend[PacerState] | None = None,
        key: str = "portal",
        turn: Turn | None = None,
    ) -> None:
        """``reserve`` requests of the burst, and the same share of the rate, are left to others.

        ``margin`` is the share of the rate held back. ``headroom_s`` seconds of
        the portal's drain (``headroom_s * rate_per_s`` requests) are never
        filled, so a request that reaches the portal up to that much earlier,
        against those before it, than it was let go still fits: the unit is
        time because the lags are, and a slow portal's bucket is not kept
        emptier than a fast one's for the same lag. It never takes the last
        request of the burst the reserve leaves.

        After a 503 the rate drops to ``cut_to`` of what it was (not below
        ``min_share`` of the full rate) and regains ``recovery_per_s`` of the
        full rate each second; 503s within ``hold_s`` of a cut come from the
        same overflow and do not cut again.

        With ``turn``, the second request waits for the first requests of the
        portals that started with it (`worker.limiter.turns`), at most until
        half a request has drained since the first.
        """
        if burst < 1 or rate_per_s <= 0:
            raise ValueError("burst must be >= 1 and rate_per_s > 0")
        if not 0 <= reserve < burst:
            raise ValueError("reserve must be >= 0 and below burst")
        if not 0 <= margin < 1 or headroom_s < 0 or not 0 < cut_to <= 1 or not 0 < min_share <= 1:
            raise ValueError("margin, headroom_s, cut_to or min_share out of range")
        kept = (burst - reserve) / burst
        self._capacity = burst - reserve - min(headroom_s * rate_per_s, burst - reserve - 1)
        self._full_rate = rate_per_s * kept * (1 - margin)
        self._clock = clock
        self._cut_to = cut_to
        self._min_share = min_share
        self._recovery = recovery_per_s
        self._hold_s = hold_s
        self._backend: StateBackend[PacerState] = backend or MemoryBackend()
        self._key = key
        self._queue = asyncio.Lock()
        self._turn = turn
        self._first_at: float | None = None

    async def acquire(self) -> float:
        """Wait for a token (in turn with other callers) and take it; returns the seconds waited.

        Call it right before sending: the request counts from here on.
        """
        started = self._clock.monotonic()
        async with self._queue:
            if self._turn is not None:
                await self._take_turn(self._turn)
            while (wait := await self._backend.modify(self._key, self._take)) > 0:
                await self._clock.sleep(wait)
        return self._clock.monotonic() - started

    async def _take_turn(self, turn: Turn) -> None:
        now = self._clock.monotonic()
        if self._first_at is None:
            self._first_at = now
            turn.called()
            return
        self._turn = None  # the second request waits once; the rest follow it
        await turn.second(self._first_at + 0.5 / self._full_rate - now, self._clock.sleep)

    async def refund(self) -> None:
        """A token taken for a request that was not sent: the portal never counted it."""
        await self._backend.modify(self._key, self._refund)

    async def on_rate_limited(self) -> None:
        """A 503 QUERY_LIMIT_EXCEEDED came back: the portal's bucket is full, so slow down."""
        await self._backend.modify(self._key, self._cut)

    async def rate_per_s(self) -> float:
        """Tokens per second handed out now."""
        return await self._backend.modify(self._key, self._rate_now)

    def _share(self, state: PacerState, now: float) -> float:
        return min(1.0, state.share + self._recovery * max(0.0, now - state.cut_at))

    def _drained(self, state: PacerState | None, now: float) -> PacerState:
        if state is None:
            return PacerState(at=now)
        if now <= state.at:
            return state
        # Drain at the rate of the interval's start: during recovery that is the lower one.
        rate = self._full_rate * self._share(state, state.at)
        return replace(state, level=max(0.0, state.level - (now - state.at) * rate), at=now)

    def _take(self, state: PacerState | None) -> tuple[PacerState, float]:
        current = self._drained(state, self._clock.time())
        over = current.level + 1.0 - self._capacity
        if over <= _EPSILON:
            return replace(current, level=current.level + 1.0), 0.0
        return current, over / (self._full_rate * self._share(current, current.at))

    def _refund(self, state: PacerState | None) -> tuple[PacerState, None]:
        current = self._drained(state, self._clock.time())
        return replace(current, level=max(0.0, current.level - 1.0)), None

    def _cut(self, state: PacerState | None) -> tuple[PacerState, None]:
        current = self._drained(state, self._clock.time())
        now = current.at
        current = replace(current, level=max(current.level, self._capacity))
        if now - current.cut_at >= self._hold_s:
            share = max(self._min_share, self._share(current, now) * self._cut_to)
            current = replace(current, share=share, cut_at=now)
        return current, None

    def _rate_now(self, state: PacerState | None) -> tuple[PacerState, float]:
        current = self._drained(state, self._clock.time())
        return current, self._full_rate * self._share(current, current.at)
