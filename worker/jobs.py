"""A delivery on its way through the pipeline: the message, its command, its tries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from schemas import UpdateCommand
from schemas.events import ErrorClass
from schemas.wire import ASSIGNED_ID_HEADER, ATTEMPTS_HEADER

__all__ = ["Delivery", "ItemKey", "Job", "message_properties"]

ItemKey = tuple[int, int]


class Delivery:
    """A message as the broker delivered it, read straight from its AMQP frames.

    The worker consumes on the broker client's own channels: wrapping every
    delivery in the higher-level library's message object cost more CPU than
    validating the command in it.
    """

    __slots__ = ("_properties", "_raw", "body")

    def __init__(self, raw: DeliveredMessage) -> None:
        self._raw = raw
        self._properties: Basic.Properties = raw.header.properties
        self.body: bytes = raw.body

    @property
    def channel(self) -> AbstractChannel:
        return self._raw.channel

    @property
    def delivery_tag(self) -> int | None:
        tag = getattr(self._raw.delivery, "delivery_tag", None)
        return tag if isinstance(tag, int) else None

    @property
    def redelivered(self) -> bool:
        return bool(getattr(self._raw.delivery, "redelivered", False))

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

    async def nack(self, *, requeue: bool = True) -> None:
        tag = self.delivery_tag
        if tag is not None:
            await self.channel.basic_nack(tag, requeue=requeue)


@dataclass
class Job:
    """One command in flight. `attempts` counts the calls already made for it."""

    message: Delivery
    message_id: str
    source: Literal["update", "retry", "poison"]
    command: UpdateCommand | None = None
    attempts: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    query: str | None = None  # the params as a batch carries them; None: they go alone
    failure: ErrorClass | None = None  # set when the command ended with a failure event

    @classmethod
    def from_message(cls, message: Delivery, source: Literal["update", "retry", "poison"]) -> Job:
        headers = message.headers
        assigned = headers.get(ASSIGNED_ID_HEADER)
        message_id = message.message_id or (assigned if isinstance(assigned, str) else None)
        attempts = headers.get(ATTEMPTS_HEADER, 0)
        return cls(
            message=message,
            message_id=message_id or uuid.uuid4().hex,
            source=source,
            attempts=attempts if isinstance(attempts, int) and attempts >= 0 else 0,
        )

    @property
    def key(self) -> ItemKey | None:
        if self.command is None:
            return None
        return (self.command.entityTypeId, self.command.id)

    @property
    def correlation_id(self) -> str | None:
        return self.message.correlation_id


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
