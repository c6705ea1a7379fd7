"""The broker as the tools use it: a connection with errors in plain words, and
publishes that end only when the broker has confirmed them.

Exception tree::

    ToolError                   a tool cannot go on; the message says what to do
    ├── BrokerUnavailableError  no connection (refused, bad credentials, no vhost)
    └── PublishRefusedError     the broker nacked a publish every time, or the queue
                                it was meant for does not exist
"""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from worker.settings import redact_url

__all__ = [
    "PUBLISH_TRIES",
    "BrokerUnavailableError",
    "PublishRefusedError",
    "ToolError",
    "connect",
    "publish_confirmed",
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
        return await aio_pika.connect(amqp_url, timeout=timeout_s)
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


async def publish_confirmed(
    channel: AbstractChannel,
    message: aio_pika.Message,
    queue: str,
    *,
    tries: int = PUBLISH_TRIES,
) -> None:
    """Publish to `queue` until the broker confirms it; raise PublishRefusedError otherwise.

    `channel` must have publisher confirms and `on_return_raises=True`: the
    publish is mandatory, so a queue that does not exist is an error here,
    not a message the broker drops after confirming it.
    """
    delay_s = 0.1
    for attempt in range(1, tries + 1):
        try:
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)
            return
        except aio_pika.exceptions.DeliveryError as exc:
            if isinstance(exc.frame, Basic.Return):
                raise PublishRefusedError(
                    f"queue {queue!r} does not exist: start the worker once (it declares "
                    "its queues) or check the queue name"
                ) from None
        if attempt < tries:
            await asyncio.sleep(delay_s)
            delay_s *= 2
    raise PublishRefusedError(f"the broker refused the message {tries} times (nack) on {queue!r}")


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
