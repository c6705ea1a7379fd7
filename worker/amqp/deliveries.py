"""A delivery as the broker handed it over, read straight from its AMQP frames.

`Source` names the queue it came from: the work queue (or a shard of it), the
queue of returning retry copies, or the queue of what the broker dead-lettered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

__all__ = ["Delivery", "Source", "message_properties"]

Source = Literal["update", "retry", "poison"]


class Delivery:
    """A message as the broker delivered it, read straight from its AMQP frames.

    The worker consumes on the broker client's own channels: wrapping every
    delivery in the higher-level library's message object cost more CPU than
    validating the command in it.
    """

    __slots__ = ("_properties", "body", "channel", "delivery_tag", "redelivered")

    def __init__(self, raw: DeliveredMessage) -> None:
        # What is kept of ``raw``, and not ``raw`` itself: a portal's prefetch holds
        # deliveries for up to its pace's 2 s, and at 200 portals some 30,000 of
        # them; the message, method frame and content header they came in would
        # be three more objects each for the cycle collector to walk.
        self._properties: Basic.Properties = raw.header.properties
        self.body: bytes = raw.body
        self.channel: AbstractChannel = raw.channel
        tag = getattr(raw.delivery, "delivery_tag", None)
        self.delivery_tag: int | None = tag if isinstance(tag, int) else None
        self.redelivered: bool = bool(getattr(raw.delivery, "redelivered", False))

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self._properties.headers or {})

    def header(self, name: str) -> Any:
        """One header's value (None when absent), without copying the table."""
        headers = self._properties.headers
        return headers.get(name) if headers else None

    @property
    def message_id(self) -> str | None:
        return self._properties.message_id

    @property
    def correlation_id(self) -> str | None:
        return self._properties.correlation_id

    @property
    def reply_to(self) -> str | None:
        return self._properties.reply_to

    @property
    def content_type(self) -> str | None:
        return self._properties.content_type

    @property
    def content_encoding(self) -> str | None:
        return self._properties.content_encoding

    @property
    def type(self) -> str | None:
        return self._properties.message_type

    @property
    def app_id(self) -> str | None:
        return self._properties.app_id

    @property
    def user_id(self) -> str | None:
        return self._properties.user_id

    @property
    def priority(self) -> int | None:
        return self._properties.priority

    @property
    def expiration(self) -> str | None:
        return self._properties.expiration

    @property
    def timestamp(self) -> datetime | None:
        return self._properties.timestamp

    def copy_properties(self, *, headers: dict[str, Any], message_id: str) -> Basic.Properties:
        """The properties of a persistent copy of this message, with these headers and id.

        Left out: `user_id` (the broker accepts only the publishing user's) and
        `expiration` (the copy's time in a delay tier is the tier's).
        """
        p = self._properties
        return Basic.Properties(
            content_type=p.content_type,
            content_encoding=p.content_encoding,
            headers=headers,
            delivery_mode=2,
            priority=p.priority,
            correlation_id=p.correlation_id,
            reply_to=p.reply_to,
            message_id=message_id,
            timestamp=p.timestamp,
            message_type=p.message_type,
            app_id=p.app_id,
        )


def message_properties(message: Delivery) -> dict[str, Any]:
    """The AMQP properties and headers of a delivery, as plain JSON data."""
    properties = {
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "type": message.type,
        "app_id": message.app_id,
        "user_id": message.user_id,
        "priority": message.priority,
        "expiration": message.expiration,
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        "headers": _plain(message.headers),
    }
    return {name: value for name, value in properties.items() if value not in (None, {})}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
