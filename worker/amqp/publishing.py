"""Publishing with confirms, many messages per socket write.

A batch of fifty commands settles at once, and each settling publishes an
event. The broker client writes every publish as its own frame set with its
own lock, timeout and socket write, which made publishing a fifth of the
worker's CPU. `Publisher` gathers the publishes asked for in one event-loop
turn and hands them to the channel as one write; each caller still waits for
the broker's confirm of its own message, and a return (unroutable mandatory
message), a nack or a closed channel reaches exactly that caller, as with
`basic_publish`.

The write itself works on the aiormq channel's confirm bookkeeping, the same
steps its `basic_publish` takes, under the same lock (`aiormq_internals`).

The publisher keeps a channel of its own and replaces it after a nack. A
channel learns where a quorum queue's leader is when it first publishes to
it, and RabbitMQ 3.10 keeps that answer for the channel's life: a channel
opened while the queue's leader node was going down nacks every publish to
that queue, for as long as the channel lives, even once another node leads.
A fresh channel asks again. The nacked channel is closed first, once the
broker has answered the rest of what was published on it, so the new one
takes its number (aiormq numbers a channel one past the highest open, and the
broker refuses numbers past its `channel_max`).

What the broker answers is translated here, at the boundary::

    PublishError        the message is not known to be on a queue
    ├── UnroutableError      mandatory, and no queue took it (basic.return)
    ├── RefusedError         the broker nacked it
    └── NotPublishedError    the channel or connection went, or the write failed
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, cast

import aiormq
from pamqp.commands import Basic

from worker.amqp.aiormq_internals import check_channel, write_publishes

__all__ = [
    "NotPublishedError",
    "PublishError",
    "Publisher",
    "Publishes",
    "RefusedError",
    "UnroutableError",
    "event_properties",
]

_PERSISTENT = 2
# A nacked channel is replaced at most once in this time, so a queue that refuses
# on purpose (full, with reject-publish) does not make a channel per retry.
_RENEW_AFTER_S = 1.0
# How long a replaced channel may wait for the broker's answers before it closes;
# publishes wait for the new channel meanwhile.
_RETIRE_WITHIN_S = 5.0


class PublishError(Exception):
    """A publish the broker did not confirm; the subclass says how."""


class UnroutableError(PublishError):
    """A mandatory publish no queue took (the broker returned it)."""


class RefusedError(PublishError):
    """The broker nacked the publish."""


class NotPublishedError(PublishError):
    """The channel or the connection went before the broker confirmed the publish."""


class Publishes(Protocol):
    """What settling needs of a publisher: `Publisher`, or a fake in tests."""

    async def publish(
        self, body: bytes, *, routing_key: str, properties: Basic.Properties, mandatory: bool
    ) -> None:
        """Return once the broker confirmed the message; PublishError otherwise."""


def event_properties(
    message_id: str, correlation_id: str | None, *, headers: dict[str, Any] | None = None
) -> Basic.Properties:
    """The properties of an event the worker publishes: JSON, persistent, the command's ids
    (``headers``: the trace context the event carries on, if any)."""
    return Basic.Properties(
        content_type="application/json",
        message_id=message_id,
        correlation_id=correlation_id,
        delivery_mode=_PERSISTENT,
        timestamp=datetime.now(UTC),
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class _Publish:
    body: bytes
    routing_key: str
    properties: Basic.Properties
    mandatory: bool
    exchange: str
    done: asyncio.Future[None]


class Publisher:
    """Publishes over a channel of its own with publisher confirms.

    ``connection`` returns the current aiormq connection, once it is up (a robust
    connection's, after a reconnect the new one).
    """

    def __init__(self, connection: Callable[[], Awaitable[aiormq.abc.AbstractConnection]]) -> None:
        self._connection = connection
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._opened_at = 0.0
        self._opening = asyncio.Lock()
        self._pending: list[_Publish] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        self._retired: aiormq.abc.AbstractChannel | None = None  # nacked, to close

    async def open(self) -> None:
        """Open the channel now, so a broker client that lacks what the publisher uses
        fails the start (AiormqIncompatibleError), not the first publish."""
        await self._current()

    async def close(self) -> None:
        """Close the channel, and a nacked one not closed yet."""
        for channel in (self._channel, self._retired):
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        self._channel = self._retired = None

    async def _current(self) -> aiormq.abc.AbstractChannel:
        """The open channel, opened anew when there is none."""
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._opening:
            channel = self._channel
            if channel is None or channel.is_closed:
                retired, self._retired = self._retired, None
                if retired is not None:
                    await _retire(retired)
                connection = await self._connection()
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                check_channel(channel)
                self._channel, self._opened_at = channel, time.monotonic()
            return channel

    def _nacked(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Replace ``channel`` after the broker nacked a publish on it."""
        if channel is not self._channel or time.monotonic() - self._opened_at < _RENEW_AFTER_S:
            return
        self._channel, self._retired = None, channel

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        properties: Basic.Properties,
        mandatory: bool,
        exchange: str = "",
    ) -> None:
        """Returns once the broker confirmed the message; PublishError otherwise.

        Without ``exchange``, the default exchange: ``routing_key`` is the queue.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Publish(body, routing_key, properties, mandatory, exchange, done))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send_pending)
        await done

    def _send_pending(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Publish]) -> None:
        try:
            channel = cast(aiormq.Channel, await self._current())
            confirmations = await write_publishes(channel, batch)
        except BaseException as exc:
            failure = NotPublishedError(f"{type(exc).__name__}: {exc}")
            for publish in batch:
                if not publish.done.done():
                    publish.done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for publish, confirmation in zip(batch, confirmations, strict=True):
            confirmation.add_done_callback(partial(self._relay, publish.done, channel))

    def _relay(
        self,
        done: asyncio.Future[None],
        channel: aiormq.abc.AbstractChannel,
        confirmation: asyncio.Future[Any],
    ) -> None:
        if done.done():
            return
        if confirmation.cancelled():
            done.set_exception(NotPublishedError("the channel closed"))
            return
        failure = confirmation.exception()
        if failure is None:
            done.set_result(None)
        elif isinstance(failure, aiormq.exceptions.DeliveryError):
            returned = isinstance(failure.frame, Basic.Return)
            if not returned:
                self._nacked(channel)
            done.set_exception(UnroutableError() if returned else RefusedError())
        else:
            done.set_exception(NotPublishedError(f"{type(failure).__name__}: {failure}"))


async def _retire(channel: aiormq.abc.AbstractChannel) -> None:
    """Close a replaced channel once the broker answered what was published on it."""
    confirmations = getattr(channel, "confirmations", {}).values()
    unanswered = [c for c in confirmations if isinstance(c, asyncio.Future)]
    if unanswered:
        await asyncio.wait(unanswered, timeout=_RETIRE_WITHIN_S)
    if not channel.is_closed:
        with contextlib.suppress(Exception):
            await channel.close()
