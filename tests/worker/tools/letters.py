"""Dead letters for the dlq tests: failure events as the worker writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from schemas import FailureEvent
from schemas.events import ErrorClass, EventError

CODES = {"validation": "VALIDATION", "transient": "ATTEMPTS_EXHAUSTED", "not_found": "NOT_FOUND"}


def command(n: int) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": n, "fields": {"title": f"Title {n}"}}


def failure(
    n: int,
    error_class: str,
    *,
    body: dict[str, Any] | str | None = None,
    portal: str | None = None,
    served: str | None = None,
    failed_at: datetime | None = None,
) -> bytes:
    """The failure event of message m-<n>, whose original had headers and a reply_to
    (and, with `portal`, the x-b24-portal header); `served` is the portal the event
    names (None: one the worker did not serve)."""
    named = {"x-b24-portal": portal} if portal else {}
    event = FailureEvent(
        messageId=f"m-{n}",
        portal=served,
        correlationId=f"c-{n}",
        entityTypeId=2,
        id=n,
        attempts=3,
        error=EventError(
            error_class=ErrorClass(error_class),
            code=CODES[error_class],
            description=f"reason {n}",
            retryable=error_class == "transient",
        ),
        command=command(n) if body is None else body,
        failedAt=failed_at,
        properties={
            "message_id": f"m-{n}",
            "correlation_id": f"c-{n}",
            "reply_to": "svc.replies",
            "content_type": "application/json",
            "app_id": "orders",
            "timestamp": "2026-01-02T03:04:05+00:00",
            "headers": {
                **named,
                "trace": f"t-{n}",
                "x-b24-attempts": 3,
                "x-death": [{"queue": "crm.item.update", "reason": "rejected", "count": 1}],
                "x-first-death-queue": "crm.item.update",
            },
        },
    )
    return event.to_json()


async def fill(
    connection: AbstractRobustConnection,
    queue: str,
    letters: list[bytes],
    *,
    timestamps: dict[int, datetime] | None = None,
) -> None:
    """Letters in order, each with a message id and headers of its own; ``timestamps``:
    the AMQP timestamp of letters by position (1 for the first)."""
    channel = await connection.channel(publisher_confirms=True)
    for position, body in enumerate(letters, start=1):
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"dl-{position}",
                headers={"position": position, "note": "kept"},
                timestamp=(timestamps or {}).get(position),
            ),
            routing_key=queue,
        )
    await channel.close()


def as_stored(message: AbstractIncomingMessage) -> tuple[bytes, str | None, dict[str, Any]]:
    """Body, id and headers, without the delivery count the broker adds to a re-read."""
    headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
    return message.body, message.message_id, headers
