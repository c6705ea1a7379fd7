"""`b24-worker dlq show`, `dlq replay` and `dlq purge`: dead letters by error class and code.

show    reads the letters (see `letters`: nothing is taken away, the order is
        kept) and prints them grouped by class and code, or as JSON lines.
replay  sends the original command of each matching letter back to
        UPDATE_QUEUE (with SHARDS > 0, to the exchange of that name with the
        item's routing key, the portal taken from the letter's x-b24-portal
        header) with its original properties and fresh attempts; a letter
        is acked (leaves the queue) only after its command's publish is
        confirmed. Letters that do not match stay, in their order. Stopped at
        any point, a letter is in the dead-letter queue, on UPDATE_QUEUE, or,
        when the stop falls between the confirm and the ack, on both (a
        duplicate the worker applies twice: harmless for most updates, while a
        command that sets fm values or uploads a file could add them twice).
purge   removes the matching letters that failed longer ago than a given age
        (the event's failedAt, or the letter's AMQP timestamp for events
        without it; a letter whose age is unknown stays). It counts them first
        and asks, unless told yes; what it removes is gone.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import aio_pika
from aio_pika.abc import AbstractConnection, DeliveryMode

from schemas import FailureEvent
from schemas.wire import PORTAL_HEADER, WORKER_HEADERS
from worker.tools.broker import ConfirmedPublisher, EntryPoint, ToolError, entry_point
from worker.tools.letters import DeadLetter, Selection, reading

__all__ = ["parse_age", "purge", "replay", "replay_message", "show"]

_DESCRIPTION_CHARS = 200
# Headers the broker or the worker put on the way; a replay starts afresh without them.
_DROPPED_PREFIXES = ("x-first-death-", "x-last-death-")


async def show(
    connection: AbstractConnection,
    queue: str,
    selection: Selection,
    *,
    limit: int | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    groups: dict[tuple[str, str], list[DeadLetter]] = defaultdict(list)
    read = 0
    async with reading(connection, queue) as letters:
        async for letter in letters.letters:
            read += 1
            if selection.matches(letter):
                groups[(letter.error_class, letter.code)].append(letter)
        depth = letters.depth
    matched = sum(len(group) for group in groups.values())
    summary = f"{queue}: {read} of {depth} dead letters read, {matched} match"
    if as_json:
        ordered = sorted((letter for group in groups.values() for letter in group), key=_place)
        for letter in ordered[:limit]:
            out.write(json.dumps(_as_json(letter), ensure_ascii=False) + "\n")
        print(summary, file=err)
        return 0
    print(summary, file=out)
    left = limit
    for (error_class, code), group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        print(f"{error_class} {code}: {len(group)}", file=out)
        shown = group if left is None else group[: max(left, 0)]
        for letter in shown:
            print("  " + _line(letter), file=out)
        if left is not None:
            left -= len(shown)
    if limit is not None and matched > limit:
        print(f"({matched - limit} more not listed; --limit {limit})", file=out)
    return 0


async def replay(
    connection: AbstractConnection,
    dead_letter_queue: str,
    update_queue: str,
    selection: Selection,
    *,
    limit: int | None,
    out: TextIO,
) -> int:
    publisher = await ConfirmedPublisher(connection).open()
    entry = await entry_point(connection, update_queue)  # missing: fails before any letter moves
    read = matched = replayed = not_replayable = 0
    problem: str | None = None
    async with reading(connection, dead_letter_queue) as letters:
        async for letter in letters.letters:
            read += 1
            if not selection.matches(letter):
                continue
            matched += 1
            event = letter.event
            message = replay_message(event) if event else None
            if event is None or message is None:
                not_replayable += 1
                continue
            exchange, routing_key = _route(entry, event, message)
            try:
                await publisher.publish(message, routing_key, exchange=exchange)
            except (ToolError, ConnectionError) as exc:
                # A lost connection leaves the letter where it is, unacked: the
                # broker may have the copy as well (the next replay then sends it twice).
                problem = str(exc)
                break
            await letter.message.ack()
            replayed += 1
            if limit is not None and replayed >= limit:
                break
    print(
        f"replayed {replayed} dead letters to {entry}; read {read}, matched {matched}, "
        f"not replayable {not_replayable} (the original body was not a JSON object); "
        f"{read - replayed} of those read stay in {dead_letter_queue}",
        file=out,
    )
    if problem:
        print(f"stopped: {problem}", file=out)
    return 1 if problem or not_replayable else 0


def parse_age(text: str) -> timedelta:
    """An age such as 30m, 12h or 7d (s, m, h, d; a bare number is days)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r}: give an age such as 30m, 12h or 7d")
    number, unit = float(match.group(1)), match.group(2) or "d"
    return timedelta(seconds=number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


async def purge(
    connection: AbstractConnection,
    queue: str,
    selection: Selection,
    *,
    older_than: timedelta | None,
    confirm: Callable[[int], bool] | None,
    out: TextIO,
    now: datetime | None = None,
) -> int:
    """Remove the matching letters older than ``older_than``. ``confirm`` is asked with
    how many match before any is removed (None: remove without asking)."""
    cutoff = (now or datetime.now(UTC)) - older_than if older_than is not None else None

    def doomed(letter: DeadLetter) -> bool:
        if not selection.matches(letter):
            return False
        if cutoff is None:
            return True
        failed_at = letter.failed_at
        return failed_at is not None and failed_at <= cutoff

    if confirm is not None:
        async with reading(connection, queue) as letters:
            count = sum([1 async for letter in letters.letters if doomed(letter)])
        if count == 0:
            print(f"{queue}: no dead letter matches; nothing removed", file=out)
            return 0
        if not confirm(count):
            print("nothing removed", file=out)
            return 1
    read = removed = unknown_age = 0
    async with reading(connection, queue) as letters:
        async for letter in letters.letters:
            read += 1
            if doomed(letter):
                await letter.message.ack()
                removed += 1
            elif cutoff is not None and selection.matches(letter) and letter.failed_at is None:
                unknown_age += 1
    kept = f"; {unknown_age} matching letters of unknown age kept" if unknown_age else ""
    print(
        f"removed {removed} dead letters from {queue}; read {read}, "
        f"{read - removed} of those stay{kept}",
        file=out,
    )
    return 0


def _route(entry: EntryPoint, event: FailureEvent, message: aio_pika.Message) -> tuple[str, str]:
    """Where a replayed command goes: to its item's shard, as its producer routed it.

    A letter without an item (its command did not parse) fails validation again
    wherever it goes; such letters all take the key of item 0.
    """
    portal = (message.headers or {}).get(PORTAL_HEADER)
    return entry.route(
        portal if isinstance(portal, str) else None, event.entityTypeId or 0, event.id or 0
    )


def replay_message(event: FailureEvent) -> aio_pika.Message | None:
    """The original command with its original properties, or None without a JSON body.

    Not restored: `user_id` (the broker accepts only the publishing user's)
    and `expiration` (it could drop the replay before the worker sees it).
    """
    if not isinstance(event.command, dict):
        return None
    properties = event.properties
    headers = {
        name: value
        for name, value in (properties.get("headers") or {}).items()
        if name not in WORKER_HEADERS and not name.startswith(_DROPPED_PREFIXES)
    }
    timestamp = _text(properties, "timestamp")
    priority = properties.get("priority")
    return aio_pika.Message(
        body=json.dumps(event.command, ensure_ascii=False).encode(),
        headers=headers or None,
        content_type=_text(properties, "content_type") or "application/json",
        content_encoding=_text(properties, "content_encoding"),
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=_text(properties, "message_id") or event.messageId,
        correlation_id=_text(properties, "correlation_id"),
        reply_to=_text(properties, "reply_to"),
        type=_text(properties, "type"),
        app_id=_text(properties, "app_id"),
        priority=priority if isinstance(priority, int) else None,
        timestamp=datetime.fromisoformat(timestamp) if timestamp else None,
    )


def _text(properties: dict[str, Any], name: str) -> str | None:
    value = properties.get(name)
    return value if isinstance(value, str) and value else None


def _place(letter: DeadLetter) -> int:
    return letter.position


def _line(letter: DeadLetter) -> str:
    event = letter.event
    if event is None:
        body = letter.message.body[:80].decode("utf-8", "replace")
        return f"#{letter.position} {letter.message.message_id or '-'} {body!r}"
    item = f"{event.entityTypeId}/{event.id}" if event.id is not None else "-"
    description = " ".join(event.error.description.split())
    if len(description) > _DESCRIPTION_CHARS:
        description = description[:_DESCRIPTION_CHARS] + "..."
    return f"#{letter.position} {event.messageId} {item} {event.error.code} {description}"


def _as_json(letter: DeadLetter) -> dict[str, Any]:
    if letter.event is None:
        return {
            "position": letter.position,
            "class": letter.error_class,
            "body": letter.message.body.decode("utf-8", "replace"),
        }
    event: dict[str, Any] = json.loads(letter.event.to_json())
    return {"position": letter.position, "event": event}
