"""A command on its way through one portal's pipeline: the delivery, its command, its tries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from schemas import UpdateCommand
from schemas.events import ErrorClass
from schemas.wire import ASSIGNED_ID_HEADER, ATTEMPTS_HEADER
from worker.amqp.deliveries import Delivery, Source

__all__ = ["ItemKey", "Job"]

ItemKey = tuple[int, int]


@dataclass
class Job:
    """One command in flight. `attempts` counts the calls already made for it."""

    message: Delivery
    message_id: str
    source: Source
    command: UpdateCommand | None = None
    attempts: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    query: str | None = None  # the params as a batch carries them; None: they go alone
    failure: ErrorClass | None = None  # set when the command ended with a failure event

    @classmethod
    def from_message(cls, message: Delivery, source: Source) -> Job:
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
