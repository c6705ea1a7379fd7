"""Waiting out a Redis outage: every command is retried until Redis answers.

A shared limiter that cannot reach its state must not let requests through
unpaced, so a command that fails for want of Redis (refused, reset, timed out,
or any other Redis error) is sent again after a pause that doubles up to a
cap. The caller simply waits, as it waits for a token; cancelling it (the
worker's drain does) stops the waiting. One line is logged when an outage
starts and one when it ends, never the server's address or password.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from redis.exceptions import RedisError

__all__ = ["Availability"]

log = structlog.get_logger("worker.limiter")

T = TypeVar("T")


class Availability:
    """Runs Redis commands through outages, and says whether the last one was answered."""

    def __init__(
        self,
        *,
        scope: str,
        timeout_s: float = 5.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``scope`` names the shared state in the log lines.

        A command that has no answer after ``timeout_s`` counts as failed, even
        if the client was built without a socket timeout. Failed commands are
        retried after ``retry_initial_s``, doubling to ``retry_max_s``.
        """
        if timeout_s <= 0 or retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("timeouts must be positive and retry_max_s >= retry_initial_s")
        self._scope = scope
        self._timeout_s = timeout_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._sleep = sleep
        self._down_since: float | None = None

    @property
    def reachable(self) -> bool:
        """Whether the last command reached Redis (``True`` before the first)."""
        return self._down_since is None

    async def call(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run ``command`` until Redis answers it; returns its answer."""
        delay = self._retry_initial_s
        while True:
            try:
                async with asyncio.timeout(self._timeout_s):
                    answer = await command()
            except (RedisError, OSError, TimeoutError) as exc:
                self._lost(exc)
                await self._sleep(delay)
                delay = min(2 * delay, self._retry_max_s)
                continue
            self._back()
            return answer

    def _lost(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "limiter.unavailable",
                scope=self._scope,
                error=type(exc).__name__,
                retry_max_s=self._retry_max_s,
            )

    def _back(self) -> None:
        if self._down_since is not None:
            down_s = time.monotonic() - self._down_since
            self._down_since = None
            log.info("limiter.recovered", scope=self._scope, down_s=round(down_s, 3))
