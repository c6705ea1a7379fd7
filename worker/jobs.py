"""A delivery on its way through the pipeline: the message, its command, its tries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aio_pika.abc import AbstractIncomingMessage

from schemas import UpdateCommand
from schemas.events import ErrorClass

__all__ = ["ATTEMPTS_HEADER", "ItemKey", "Job", "message_properties"]

# Set on retry copies: how many calls to the portal the command has had so far.
ATTEMPTS_HEADER = "x-b24-attempts"
# Set on retry copies: the message id the worker assigned when the producer gave none.
ASSIGNED_ID_HEADER = "x-b24-message-id"

ItemKey = tuple[int, int]


@dataclass
class Job:
    """One command in flight. `attempts` counts the calls already made for it."""

    message: AbstractIncomingMessage
    message_id: str
    source: Literal["update", "retry", "poison"]
    command: UpdateCommand | None = None
    attempts: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    query: str | None = None  # the params as a batch carries them; None: they go alone
    failure: ErrorClass | None = None  # set when the command ended with a failure event

    @classmethod
    def from_message(
        cls, message: AbstractIncomingMessage, source: Literal["update", "retry", "poison"]
    ) -> Job:
        headers = message.headers or {}
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


def message_properties(message: AbstractIncomingMessage) -> dict[str, Any]:
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
        "headers": _plain(dict(message.headers or {})),
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
