"""The portal-wide state: up, or down for a reason every message shares.

Bad credentials and a blocked portal are not outcomes of a message. When one is
seen the worker stops consuming, hands back what it holds and probes the portal
with growing pauses; the first answer that is not portal-wide brings it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

__all__ = ["Breaker"]

log = structlog.get_logger("worker.flow.breaker")


class Breaker:
    def __init__(
        self,
        *,
        probe: Callable[[], Awaitable[str | None]],
        on_open: Callable[[], Awaitable[None]],
        on_close: Callable[[], Awaitable[None]],
        first_pause_s: float = 1.0,
        max_pause_s: float = 60.0,
        name: str = "default",
    ) -> None:
        self._probe = probe  # returns the portal-wide state still seen, or None when up
        self._on_open = on_open
        self._on_close = on_close
        self._first_pause_s = first_pause_s
        self._max_pause_s = max_pause_s
        self._log = log.bind(portal=name)
        self.state: str | None = None
        self._probing: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self.state is not None

    async def trip(self, state: str, code: str) -> None:
        """A portal-wide answer was seen; the first one stops consumption and starts probing."""
        if self.state is not None:
            return
        self.state = state
        self._log.error(
            "portal.down", state=state, code=code, note="consuming stops; messages stay queued"
        )
        await self._on_open()
        self._probing = asyncio.create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        pause = self._first_pause_s
        while True:
            await asyncio.sleep(pause)
            still = await self._probe()
            if still is None:
                break
            self._log.warning(
                "portal.still_down", state=still, next_probe_s=min(pause * 2, self._max_pause_s)
            )
            self.state = still
            pause = min(pause * 2, self._max_pause_s)
        self._log.info("portal.up")
        self.state = None
        await self._on_close()

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
