"""Outcome events coming back on a reply queue, matched to commands by correlation id.

One exclusive, server-named queue per user (a `publish --wait` run, an
`UpdateClient`): the broker deletes it when the connection closes. The worker
sends the success event there, and a copy of the failure event (the original
goes to DEAD_LETTER_QUEUE).
"""

from __future__ import annotations

import asyncio
import json

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from schemas import FailureEvent, SuccessEvent

__all__ = ["Event", "Replies", "parse_event"]

Event = SuccessEvent | FailureEvent


def parse_event(body: bytes) -> Event | None:
    """The event in a body, or None when it is not one of the contract's events."""
    try:
        status = json.loads(body).get("status")
        if status == "succeeded":
            return SuccessEvent.model_validate_json(body)
        if status == "failed":
            return FailureEvent.model_validate_json(body)
    except (ValueError, AttributeError, ValidationError):
        return None
    return None


class Replies:
    """The reply queue: `expect` a correlation id before publishing, then await it."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._queue: AbstractQueue | None = None
        self._waiting: dict[str, asyncio.Future[Event]] = {}
        self.duplicates = 0  # events for a correlation id already answered (at-least-once)
        self.strays = 0  # events for no expected correlation id, or not events at all

    @property
    def name(self) -> str:
        if self._queue is None:
            raise RuntimeError("the reply queue is not open")
        return self._queue.name

    async def open(self) -> str:
        self._queue = await self._channel.declare_queue(
            "", exclusive=True, auto_delete=True, durable=False
        )
        await self._queue.consume(self._on_reply, no_ack=True)
        return self._queue.name

    def expect(self, correlation_id: str) -> asyncio.Future[Event]:
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        future = self._waiting.pop(correlation_id, None)
        if future is not None and not future.done():
            future.cancel()

    def fail_all(self, error: BaseException) -> None:
        """End every wait with `error` (the connection is gone)."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        event = parse_event(message.body)
        key = message.correlation_id or (event.correlationId if event else None)
        future = self._waiting.get(key) if key else None
        if event is None or future is None:
            self.strays += 1
        elif future.done():
            self.duplicates += 1
        else:
            future.set_result(event)
