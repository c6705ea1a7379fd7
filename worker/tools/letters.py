"""Reading DEAD_LETTER_QUEUE without taking anything away from it.

The queue is a quorum queue: no browsing, no offsets. A reader consumes from
its head and holds every delivery unacknowledged; what it does not ack goes
back when its channel closes. On RabbitMQ 3.10 (measured, tests/worker/tools)
the broker puts held deliveries back in the order they were taken, ahead of
anything that arrived meanwhile, when the holder is a consumer and its channel
closes. Deliveries taken with basic.get, or handed back with one nack for many,
come back in another order once there are more than a few dozen: so neither
is used here.

The broker puts them back after the channel's close is confirmed, not
before: on a loaded machine a passive declare made right after the close
still counted fewer ready letters (19 times in 100 with both cores busy), and
a read begun then found nothing to read. So a read ends once the letters it
handed back are ready again, waiting at most `HANDED_BACK_WITHIN_S`.

What a read leaves different: the broker counts it as a delivery, so later
readers see `redelivered` set and an `x-delivery-count` header. Bodies,
properties and the other headers are untouched.

At most 65,535 letters are held at once (the largest prefetch AMQP allows);
a longer queue is read that far.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from schemas import FailureEvent
from schemas.wire import PORTAL_HEADER
from worker.tools.broker import ToolError, queue_depth
from worker.tools.replies import parse_event

__all__ = ["MAX_HELD", "UNREADABLE", "DeadLetter", "Reading", "Selection", "reading"]

MAX_HELD = 65_535
# How long a read waits, at its end, for the letters it handed back to be ready again.
HANDED_BACK_WITHIN_S = 5.0
UNREADABLE = "unreadable"  # the class shown for a message that is not a failure event


@dataclass(frozen=True)
class DeadLetter:
    position: int  # 1 for the head of the queue
    message: AbstractIncomingMessage
    event: FailureEvent | None  # None when the body is not a failure event

    @property
    def error_class(self) -> str:
        return self.event.error.error_class if self.event else UNREADABLE

    @property
    def code(self) -> str:
        return self.event.error.code if self.event else "-"

    @property
    def portal(self) -> str | None:
        """The portal the command was for: as the event names it, or, for a portal the
        worker did not serve (a command sent before its portal was registered), as
        the command's own x-b24-portal header named it."""
        if self.event is None:
            return None
        if self.event.portal is not None:
            return self.event.portal
        named = (self.event.properties.get("headers") or {}).get(PORTAL_HEADER)
        return named if isinstance(named, str) else None

    @property
    def failed_at(self) -> datetime | None:
        """When the command failed: the event's failedAt, or, for an event without it,
        the dead letter's AMQP timestamp; None when neither tells."""
        if self.event is not None and self.event.failedAt is not None:
            at = self.event.failedAt
            return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        stamp = self.message.timestamp
        if stamp is None:
            return None
        return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """Which letters a command acts on: every one, or those of a class, a code,
    a portal and/or a set of message ids."""

    error_class: str | None = None
    code: str | None = None
    portal: str | None = None
    message_ids: frozenset[str] | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.message_ids is not None and (
            letter.event is None or letter.event.messageId not in self.message_ids
        ):
            return False
        if self.error_class is not None and letter.error_class != self.error_class:
            return False
        if self.portal is not None and letter.portal != self.portal:
            return False
        return self.code is None or letter.code == self.code


@dataclass
class Reading:
    depth: int  # letters ready when the read began
    letters: AsyncIterator[DeadLetter]


@asynccontextmanager
async def reading(
    connection: AbstractConnection, queue: str, *, idle_s: float = 2.0
) -> AsyncIterator[Reading]:
    """The letters ready in `queue`, head first, each held until acked or the end.

    The read stops after the letters that were ready when it began (letters
    arriving meanwhile are left for the next read), or when nothing has come
    for `idle_s` (another consumer took the rest). On exit every letter not
    acked goes back to the queue, in its place.
    """
    channel = await connection.channel()
    taken: list[AbstractIncomingMessage] = []
    depth = wanted = 0
    try:
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise ToolError(
                f"queue {queue!r} does not exist: the worker declares it when it starts"
            ) from None
        depth = int(declared.declaration_result.message_count or 0)
        wanted = min(depth, MAX_HELD)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        if wanted:
            await channel.set_qos(prefetch_count=wanted)
            await declared.consume(inbox.put, no_ack=False)

        async def letters() -> AsyncIterator[DeadLetter]:
            for position in range(1, wanted + 1):
                try:
                    message = await asyncio.wait_for(inbox.get(), idle_s)
                except TimeoutError:
                    return
                taken.append(message)
                yield DeadLetter(position, message, _failure_event(message.body))

        yield Reading(depth=depth, letters=letters())
    finally:
        # Closing the channel hands back every delivery not acked, in the order
        # they were taken (see the module's docstring).
        if not channel.is_closed:
            await channel.close()
    if wanted:
        removed = sum(1 for message in taken if message.processed)
        await _until_ready(connection, queue, depth - removed, HANDED_BACK_WITHIN_S)


async def _until_ready(
    connection: AbstractConnection, queue: str, letters: int, within_s: float
) -> None:
    """Wait until ``queue`` has at least ``letters`` ready, at most ``within_s`` (fewer
    stay when another reader took some meanwhile)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while await queue_depth(connection, queue) < letters:
        if asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.05)


def read_message_ids(path: str) -> frozenset[str]:
    """The message ids a file lists: `jobs results` JSON Lines (`messageId`), its CSV
    (a `messageId` column), or one id per line."""
    try:
        with open(path, encoding="utf-8", newline="") as source:
            text = source.read()
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].split(",")[0] == "messageId":
        return frozenset(row["messageId"] for row in csv.DictReader(lines) if row["messageId"])
    found = set()
    for number, line in enumerate(lines, 1):
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                raise ToolError(f"{path}:{number}: not a JSON object") from None
            message_id = doc.get("messageId") if isinstance(doc, dict) else None
            if not isinstance(message_id, str):
                raise ToolError(f"{path}:{number}: no messageId") from None
            found.add(message_id)
        else:
            found.add(line)
    return frozenset(found)


def _failure_event(body: bytes) -> FailureEvent | None:
    event = parse_event(body)
    return event if isinstance(event, FailureEvent) else None
