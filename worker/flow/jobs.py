"""A command on its way through one portal's pipeline: the delivery, its command, its tries."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from schemas import CommandValidationError, UpdateCommand, parse_command
from schemas.events import ErrorClass
from schemas.wire import ASSIGNED_ID_HEADER, ATTEMPTS_HEADER, JOB_HEADER, JSON_CONTENT_TYPES
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
    retried_for: str | None = None  # why, when it was last sent to a delay tier
    # The fm values it adds, as counted on the item just before its first call (readback).
    before: Counter[tuple[str, str]] | None = None
    # Coalescing: the commands a merged call's job carries (empty: itself alone), and
    # whether this command must go alone (it was split from a rejected merge). A tuple:
    # the empty one is shared, where a list per job would be one more object for the
    # cycle collector to walk while the command waits for its portal's pace.
    parts: tuple[Job, ...] = ()
    alone: bool = False
    span: Any = None  # its trace span (worker.tracing), None with tracing off

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

    def decode(self, *, max_bytes: int) -> str | None:
        """Read the command from the body; the reason when it is not a valid command."""
        message = self.message
        size = len(message.body)
        if size > max_bytes:
            return f"the body is {size} bytes; the limit is {max_bytes} (MAX_MESSAGE_BYTES)"
        content_type = (message.content_type or "").split(";")[0].strip().lower()
        if content_type not in JSON_CONTENT_TYPES:
            return f"content type {content_type!r}: a command is JSON (application/json)"
        return self.parse()

    def parse(self) -> str | None:
        """Validate the body as a command (schemas.parse_command); the reason when it is not."""
        try:
            self.command = parse_command(self.message.body)
        except CommandValidationError as exc:
            return exc.reason
        self.params = self.command.to_params()
        return None

    @property
    def key(self) -> ItemKey | None:
        if self.command is None:
            return None
        return (self.command.entityTypeId, self.command.id)

    @property
    def correlation_id(self) -> str | None:
        return self.message.correlation_id

    @property
    def bulk_job(self) -> str | None:
        """The bulk job the command belongs to: its x-b24-job header, when it is text."""
        value = self.message.header(JOB_HEADER)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value if isinstance(value, str) and value else None
