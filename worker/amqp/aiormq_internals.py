"""The aiormq internals the worker relies on, in one place, and a check for them.

aio-pika's channels stand on aiormq's, and the worker's hot path goes beneath
aio-pika (BENCHMARKS.md: each step was a measured hot spot). Two things it does
there are not aiormq's public API:

- `write_publishes`: many publishes in one socket write, each still confirmed on
  its own. It takes the steps `aiormq.Channel.basic_publish` takes, under the
  same lock: the delivery-tag counter, a confirmation future per tag, the
  message-id map that routes a basic.return to its publish, and the write queue.
- `consumer_tags`: the consumers a channel still has; a server-side basic.cancel
  removes its tag from `Channel.consumers`.

`check_channel` raises `AiormqIncompatibleError`, naming the aiormq version and
what is missing, when a channel lacks any of this: an aiormq release that moved
it must stop the worker at start, not break publishing silently.
tests/worker/amqp/test_aiormq_internals.py holds these steps against a live broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from functools import partial
from importlib.metadata import version
from typing import Any, Protocol

import aiormq
from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

__all__ = [
    "CHANNEL_ATTRIBUTES",
    "AiormqIncompatibleError",
    "Publish",
    "check_channel",
    "consumer_tags",
    "write_publishes",
]

# What `write_publishes` and `consumer_tags` use of an aiormq channel.
CHANNEL_ATTRIBUTES = (
    "lock",
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "max_content_size",
    "number",
    "create_future",
    "consumers",
    "is_closed",
)


class AiormqIncompatibleError(RuntimeError):
    """The installed aiormq lacks what the worker uses beneath its public API."""


class Publish(Protocol):
    @property
    def body(self) -> bytes: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def properties(self) -> Basic.Properties: ...
    @property
    def mandatory(self) -> bool: ...
    @property
    def exchange(self) -> str: ...


def check_channel(channel: AbstractChannel) -> None:
    """Raise AiormqIncompatibleError unless ``channel`` has every attribute used here."""
    missing = [name for name in CHANNEL_ATTRIBUTES if not hasattr(channel, name)]
    if missing or not hasattr(ChannelFrame, "marshall"):
        missing += [] if hasattr(ChannelFrame, "marshall") else ["ChannelFrame.marshall"]
        raise AiormqIncompatibleError(
            f"aiormq {version('aiormq')} lacks {', '.join(missing)}, which the worker's "
            "publisher and consumers use: install the aiormq release pyproject.toml allows"
        )


def consumer_tags(channel: AbstractChannel) -> set[str]:
    """The consumers ``channel`` still has; a server-side cancel removes its tag."""
    consumers: dict[str, object] = getattr(channel, "consumers", {})
    return set(consumers)


async def write_publishes(
    channel: aiormq.Channel, publishes: Sequence[Publish]
) -> list[asyncio.Future[Any]]:
    """Write the publishes in one frame set; their confirmations.

    Each confirmation resolves as `basic_publish`'s would: a Basic.Ack, or a
    DeliveryError (nack) or PublishError (basic.return of a mandatory publish).
    When the write fails nothing reached the broker: the delivery tags are given
    back and the confirmations cancelled.
    """
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    async with channel.lock:
        registered: list[tuple[int, str]] = []
        confirmations: list[asyncio.Future[Any]] = []
        frames: list[Any] = []
        try:
            for publish in publishes:
                properties = publish.properties
                if not properties.message_id:
                    properties.message_id = uuid.uuid4().hex
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                confirmation = channel.create_future()
                channel.confirmations[tag] = confirmation
                channel.message_id_delivery_tag[properties.message_id] = tag
                registered.append((tag, properties.message_id))
                confirmation.add_done_callback(
                    partial(_forget, channel, properties.message_id, tag)
                )
                confirmations.append(confirmation)
                frames.append(
                    Basic.Publish(
                        exchange=publish.exchange,
                        routing_key=publish.routing_key,
                        mandatory=publish.mandatory,
                    )
                )
                frames.append(ContentHeader(properties=properties, body_size=len(publish.body)))
                size = channel.max_content_size
                frames.extend(
                    ContentBody(publish.body[start : start + size])
                    for start in range(0, len(publish.body), size)
                )
            await channel.write_queue.put(
                ChannelFrame.marshall(frames=frames, channel_number=channel.number)
            )
        except BaseException:
            for tag, message_id in registered:
                channel.confirmations.pop(tag, None)
                if channel.message_id_delivery_tag.get(message_id) == tag:
                    channel.message_id_delivery_tag.pop(message_id)
            channel.delivery_tag -= len(registered)
            for confirmation in confirmations:
                confirmation.cancel()
            raise
    return confirmations


def _forget(channel: aiormq.Channel, message_id: str, tag: int, _: asyncio.Future[Any]) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)
