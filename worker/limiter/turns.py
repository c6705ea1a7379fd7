"""At start, every portal's first call before any portal's second.

A worker that starts with many portals' commands waiting reads them from
the broker queue by queue, and every portal's first call waits until its
first batch has been read. The portals already going compete for the same
process meanwhile: each further call of theirs is a batch to encode, an
answer to read, fifty events to publish and fifty more deliveries to read.
Their bursts spent at once push the first calls of the portals read last
back by a second or more.

So at start a portal's second call waits until every portal that had
commands waiting has made its first call, and never longer than until half
a request has drained from its bucket since its first call. The bucket then
still holds half a request: none of its drain is lost, and the portal's
later calls go out when they would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

__all__ = ["FirstCalls", "Turn"]


class FirstCalls:
    """The portals that had commands waiting at start and have not made a call yet."""

    def __init__(self, waiting: Iterable[str]) -> None:
        self._waiting = set(waiting)
        self._all_called = asyncio.Event()
        if not self._waiting:
            self._all_called.set()

    @property
    def waiting(self) -> frozenset[str]:
        return frozenset(self._waiting)

    def turn(self, portal: str) -> Turn:
        """The view of one portal's pacer."""
        return Turn(self, portal)

    def called(self, portal: str) -> None:
        self._waiting.discard(portal)
        if not self._waiting:
            self._all_called.set()

    async def all_called(
        self, within_s: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> bool:
        """Wait until no portal waits for its first call, at most ``within_s`` (slept with
        ``sleep``, the pacer's clock); whether none does."""
        if self._all_called.is_set() or within_s <= 0:
            return self._all_called.is_set()
        called = asyncio.ensure_future(self._all_called.wait())
        timer = asyncio.ensure_future(sleep(within_s))
        try:
            await asyncio.wait((called, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            called.cancel()
            timer.cancel()
        return self._all_called.is_set()


@dataclass(frozen=True, slots=True)
class Turn:
    """One portal's place in `FirstCalls`."""

    first_calls: FirstCalls
    portal: str

    def called(self) -> None:
        """The portal made its first call."""
        self.first_calls.called(self.portal)

    async def second(
        self, within_s: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Before the portal's second call: wait for the others' first calls (``within_s``)."""
        await self.first_calls.all_called(within_s, sleep)
