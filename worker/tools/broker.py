"""The broker as the tools use it: a connection with errors in plain words, the
entry point commands are published to, and publishes that end only when the
broker has confirmed them.

The entry point is UPDATE_QUEUE as the workers declared it: the queue of that
name, or, when the workers run with SHARDS > 0 or with portal queues, the
exchange of that name (consistent-hash, or headers), where each command is
published with its item's routing key (the headers exchange routes by the
x-b24-portal header instead). The tools find out which by looking: the exchange
counts when it exists together with its first shard queue or its alternate
exchange (both made by the workers), so a producer need not know SHARDS or the
portals.

Exception tree::

    ToolError                   a tool cannot go on; the message says what to do
    ├── BrokerUnavailableError  no connection (refused, bad credentials, no vhost)
    └── PublishRefusedError     the broker nacked a publish every time, or the queue
                                it was meant for does not exist (no shard queue is
                                bound to the exchange)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

from schemas.wire import item_routing_key, shard_queue, unrouted_exchange
from worker.amqp.nodes import connect_any, exists, underlay
from worker.amqp.publishing import NotPublishedError, Publisher, RefusedError, UnroutableError
from worker.settings import redact_url

__all__ = [
    "PUBLISH_TRIES",
    "BrokerUnavailableError",
    "ConfirmedPublisher",
    "EntryPoint",
    "PublishRefusedError",
    "ToolError",
    "connect",
    "entry_point",
    "exists",
    "queue_depth",
]

# A nacked publish is sent again this many times in all, with growing pauses
# (0.1 s doubling: about 3 s), before it is reported as not published.
PUBLISH_TRIES = 5


class ToolError(Exception):
    """Root of the tools' errors: the message is meant for an operator."""


class BrokerUnavailableError(ToolError):
    """The broker could not be reached or refused the connection."""


class PublishRefusedError(ToolError):
    """A publish the broker never confirmed: nacked every time, or unroutable."""


async def connect(amqp_url: str, *, timeout_s: float = 10.0) -> AbstractConnection:
    """A plain (not robust) connection: a tool that loses it stops and says so."""
    where = redact_url(amqp_url)
    try:
        return await connect_any(amqp_url, timeout_s=timeout_s)
    except aiormq.exceptions.ProbableAuthenticationError:
        raise BrokerUnavailableError(
            f"the broker at {where} refused the user or password in AMQP_URL"
        ) from None
    except (TimeoutError, ConnectionError, OSError) as exc:
        reason = exc.args[1] if len(exc.args) > 1 else type(exc).__name__
        raise BrokerUnavailableError(
            f"cannot reach the broker at {where} ({reason}): is RabbitMQ running, "
            "and are AMQP_URL's host and port right?"
        ) from None
    except aiormq.exceptions.AMQPError as exc:
        raise BrokerUnavailableError(
            f"the broker at {where} closed the connection ({type(exc).__name__}): "
            "does AMQP_URL's virtual host exist, and may the user open it?"
        ) from None


@dataclass(frozen=True)
class EntryPoint:
    """Where commands are published: the queue `name`, or the exchange `name`, which
    routes by item (shards) or by portal (portal queues)."""

    name: str
    # The queue itself, or the exchange of that name and what it routes by.
    routes_by: Literal["queue", "item", "portal"] = "queue"

    def route(self, portal: str | None, entity_type_id: int, item_id: int) -> tuple[str, str]:
        """The exchange and the routing key of a command for this item."""
        if self.routes_by == "queue":
            return "", self.name
        return self.name, item_routing_key(portal, entity_type_id, item_id)

    def __str__(self) -> str:
        if self.routes_by == "queue":
            return self.name
        return f"{self.name} (exchange, by {self.routes_by})"


async def entry_point(connection: AbstractConnection, name: str) -> EntryPoint:
    """UPDATE_QUEUE as the workers declared it; ToolError when there is none."""
    if await exists(connection, name, exchange=True):
        if await exists(connection, shard_queue(name, 0), exchange=False):
            return EntryPoint(name, "item")
        if await exists(connection, unrouted_exchange(name), exchange=True):
            return EntryPoint(name, "portal")
    await queue_depth(connection, name)  # a missing queue fails here, clearly
    return EntryPoint(name)


class ConfirmedPublisher:
    """Mandatory publishes, each ended only by the broker's confirm.

    Over the worker's own `Publisher`: publishes asked for together go out in
    one write, and a channel the broker nacked on is replaced (closed first, so
    the new one takes its number). That matters on a cluster: RabbitMQ 3.10
    nacks every later publish of a channel whose first publish to a quorum
    queue met a leader that was going down, for as long as the channel lives
    (docs/operations.md). A client opened at such a moment recovers with the
    next channel instead of being refused until it is recreated.
    """

    def __init__(self, connection: AbstractConnection) -> None:
        self._publisher = Publisher(partial(underlay, connection))

    async def open(self) -> ConfirmedPublisher:
        await self._publisher.open()
        return self

    async def close(self) -> None:
        await self._publisher.close()

    async def publish(
        self,
        message: aio_pika.Message,
        routing_key: str,
        *,
        exchange: str = "",
        tries: int = PUBLISH_TRIES,
    ) -> None:
        """Publish until the broker confirms it; PublishRefusedError otherwise.

        Without ``exchange``, ``routing_key`` is the queue. A channel or connection
        lost before the confirm raises ConnectionError: the broker may or may not
        have the message.
        """
        where = f"exchange {exchange!r}" if exchange else f"queue {routing_key!r}"
        delay_s = 0.1
        for attempt in range(1, tries + 1):
            try:
                await self._publisher.publish(
                    message.body,
                    routing_key=routing_key,
                    properties=message.properties,
                    mandatory=True,
                    exchange=exchange,
                )
                return
            except UnroutableError:
                raise PublishRefusedError(_unroutable(exchange, routing_key)) from None
            except NotPublishedError as exc:
                raise ConnectionError(f"not confirmed on {where}: {exc}") from None
            except RefusedError:
                pass
            if attempt < tries:
                await asyncio.sleep(delay_s)
                delay_s *= 2
        raise PublishRefusedError(f"the broker refused the message {tries} times (nack) on {where}")


def _unroutable(exchange: str, routing_key: str) -> str:
    if exchange:
        return (
            f"exchange {exchange!r} has no shard queue bound: start the worker once (it "
            "declares and binds its shard queues) or check the name"
        )
    return (
        f"queue {routing_key!r} does not exist: start the worker once (it declares "
        "its queues) or check the queue name"
    )


async def queue_depth(connection: AbstractConnection, queue: str) -> int:
    """Messages ready in `queue`; BrokerUnavailableError-style ToolError when it does not exist."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise ToolError(
            f"queue {queue!r} does not exist: the worker declares it when it starts"
        ) from None
    finally:
        if not channel.is_closed:
            await channel.close()
    return int(declared.declaration_result.message_count or 0)
