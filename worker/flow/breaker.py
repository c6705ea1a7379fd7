"""A portal in a portal-wide state, probed with growing pauses until it answers.

Bad credentials and a blocked portal are not outcomes of a message. The lane's
pipeline opens its breaker when it sees one, stops taking deliveries, and waits
in `until_up`, which probes the portal until the first answer that is not
portal-wide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

__all__ = ["Breaker"]

log = structlog.get_logger("worker.flow.breaker")


class Breaker:
    """The portal's state: up (`state` None) or down for a reason every message shares."""

    def __init__(
        self,
        *,
        probe: Callable[[], Awaitable[str | None]],
        first_pause_s: float = 1.0,
        max_pause_s: float = 60.0,
        name: str = "default",
    ) -> None:
        self._probe = probe  # returns the portal-wide state still seen, or None when up
        self._first_pause_s = first_pause_s
        self._max_pause_s = max_pause_s
        self._log = log.bind(portal=name)
        self._state: str | None = None

    @property
    def state(self) -> str | None:
        """Why the portal is down (``bad_credentials``, ``blocked``...), or None while up."""
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state is not None

    def open(self, state: str) -> bool:
        """A portal-wide answer was seen; True when it is the first (the portal was up)."""
        if self._state is not None:
            return False
        self._state = state
        return True

    async def until_up(self) -> None:
        """Probe with growing pauses until the portal answers; the breaker is closed then."""
        pause = self._first_pause_s
        while True:
            await asyncio.sleep(pause)
            still = await self._probe()
            if still is None:
                break
            self._log.warning(
                "portal.still_down", state=still, next_probe_s=min(pause * 2, self._max_pause_s)
            )
            self._state = still
            pause = min(pause * 2, self._max_pause_s)
        self._log.info("portal.up")
        self._state = None
