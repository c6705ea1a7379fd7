"""The one place that turns a command's outcome into broker actions.

    Succeeded  -> success event to reply_to (mandatory; RESULT_QUEUE when it is
                  unroutable) or to RESULT_QUEUE, confirmed -> ack
    Failed     -> failure event to DEAD_LETTER_QUEUE, confirmed (a copy to reply_to
                  when there is one) -> ack
    Retry      -> a copy of the original message to the delay tier, with the
                  attempts so far, confirmed -> ack
    HandBack   -> nack with requeue: the broker keeps the message (a portal-wide
                  state, or shutting down)

A delivery is acked only after what replaces it is confirmed by the broker; a
publish the broker nacks is published again.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, DeliveryMode
from pamqp.commands import Basic

from schemas import FailureEvent, SuccessEvent
from schemas.events import ErrorClass, EventError
from schemas.wire import ASSIGNED_ID_HEADER, ATTEMPTS_HEADER
from worker.amqp.acks import Acks
from worker.amqp.deliveries import message_properties
from worker.amqp.publishing import Publisher
from worker.amqp.topology import Topology
from worker.flow.jobs import Job

__all__ = ["Failed", "HandBack", "Outcome", "Outcomes", "Retry", "Succeeded"]

log = structlog.get_logger("worker.flow.outcomes")

_PERSISTENT = DeliveryMode.PERSISTENT.value
_MAX_COMMAND_TEXT = 64 * 1024  # a failure event keeps at most this much of a non-JSON body


@dataclass(frozen=True)
class Succeeded:
    item: dict[str, Any]
    not_applied: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed:
    error_class: ErrorClass
    code: str
    description: str
    retryable: bool = False


@dataclass(frozen=True)
class Retry:
    reason: str


@dataclass(frozen=True)
class HandBack:
    reason: str


Outcome = Succeeded | Failed | Retry | HandBack


class Outcomes:
    """Settles jobs: publishes what replaces a delivery, then acks it.

    `channel` must have publisher confirms and `on_return_raises=True`, so that an
    unroutable reply_to is known. Events are published on its underlying
    channel: building them as library messages first costs more CPU than the
    rest of a command's way through the worker.
    """

    def __init__(
        self,
        *,
        channel: AbstractChannel,
        topology: Topology,
        max_attempts: int,
        max_message_bytes: int = 1_048_576,
        acks: Acks | None = None,
    ) -> None:
        self._channel = channel
        self._max_message_bytes = max_message_bytes
        self._publisher = Publisher(channel.get_underlay_channel)
        self._topology = topology
        self._max_attempts = max_attempts
        self.acks = acks or Acks()

    async def settle(self, job: Job, outcome: Outcome) -> str:
        """Carry out the outcome; returns what was done (for logs and metrics)."""
        if isinstance(outcome, Retry) and job.attempts >= self._max_attempts:
            outcome = Failed(
                ErrorClass.TRANSIENT,
                "ATTEMPTS_EXHAUSTED",
                f"{job.attempts} attempts failed; the last: {outcome.reason}",
                retryable=True,
            )
        message = job.message
        if isinstance(outcome, HandBack):
            await _quietly(message.nack(requeue=True), job)
            if message.delivery_tag is not None:
                self.acks.settled_elsewhere(message.channel, message.delivery_tag)
            return "handed_back"
        if isinstance(outcome, Succeeded):
            await self._publish_success(job, outcome)
            done = "succeeded"
        elif isinstance(outcome, Failed):
            job.failure = outcome.error_class
            await self._publish_failure(job, outcome)
            done = "failed"
        else:
            await self._publish_retry(job)
            done = "retried"
        if message.delivery_tag is not None:
            self.acks.ack(message.channel, message.delivery_tag, job.message_id)
        return done

    async def _publish_success(self, job: Job, outcome: Succeeded) -> None:
        command = job.command
        if command is None:
            raise ValueError("a success needs a parsed command")
        event = SuccessEvent(
            messageId=job.message_id,
            correlationId=job.correlation_id,
            entityTypeId=command.entityTypeId,
            id=command.id,
            attempts=job.attempts,
            item=outcome.item,
            ignoredFields=list(command.ignored_fields),
            notApplied=list(outcome.not_applied),
        )
        body = event.to_json()
        reply_to = job.message.reply_to
        if reply_to and await self._publish(body, reply_to, job, mandatory=True):
            return
        await self._publish(body, self._topology.result_queue, job)

    async def _publish_failure(self, job: Job, outcome: Failed) -> None:
        command = job.command
        event = FailureEvent(
            messageId=job.message_id,
            correlationId=job.correlation_id,
            entityTypeId=command.entityTypeId if command else None,
            id=command.id if command else None,
            attempts=job.attempts,
            error=EventError(
                error_class=outcome.error_class,
                code=outcome.code,
                description=outcome.description,
                retryable=outcome.retryable,
            ),
            command=_original_command(job.message.body, self._max_message_bytes),
            properties=message_properties(job.message),
        )
        body = event.to_json()
        await self._publish(body, self._topology.dead_letter_queue, job)
        reply_to = job.message.reply_to
        if reply_to:
            await self._publish(body, reply_to, job, mandatory=True)

    async def _publish_retry(self, job: Job) -> None:
        original = job.message
        headers = original.headers
        headers[ATTEMPTS_HEADER] = job.attempts
        if not original.message_id:
            headers[ASSIGNED_ID_HEADER] = job.message_id
        copy = aio_pika.Message(
            body=original.body,
            headers=headers,
            content_type=original.content_type,
            content_encoding=original.content_encoding,
            # The broker's client would stamp a random id on a message without
            # one; the copy keeps the id its events are already known by.
            message_id=original.message_id or job.message_id,
            correlation_id=original.correlation_id,
            reply_to=original.reply_to,
            type=original.type,
            app_id=original.app_id,
            timestamp=original.timestamp,
            priority=original.priority,
            delivery_mode=DeliveryMode.PERSISTENT,
        )
        tier = self._topology.tier_queue(self._topology.tier_for(job.attempts))
        await self._publish_message(copy.body, copy.properties, tier, job)

    async def _publish(self, body: bytes, queue: str, job: Job, *, mandatory: bool = False) -> bool:
        properties = Basic.Properties(
            content_type="application/json",
            message_id=job.message_id,
            correlation_id=job.correlation_id,
            delivery_mode=_PERSISTENT,
        )
        return await self._publish_message(body, properties, queue, job, mandatory=mandatory)

    async def _publish_message(
        self,
        body: bytes,
        properties: Basic.Properties,
        queue: str,
        job: Job,
        *,
        mandatory: bool = True,
    ) -> bool:
        """Publish until the broker confirms; False when a mandatory publish is unroutable."""
        delay = 0.1
        while True:
            try:
                await self._publisher.publish(
                    body, routing_key=queue, properties=properties, mandatory=mandatory
                )
                return True
            except aio_pika.exceptions.DeliveryError as exc:
                if isinstance(exc.frame, Basic.Return):
                    log.warning(
                        "publish.unroutable", queue=queue, message_id=job.message_id, item=job.key
                    )
                    return False
                log.warning("publish.nacked", queue=queue, message_id=job.message_id, item=job.key)
            except (
                TimeoutError,
                aio_pika.exceptions.AMQPError,
                aiormq.exceptions.ChannelInvalidStateError,  # the channel is being reopened
                ConnectionError,
            ) as exc:
                log.warning(
                    "publish.failed",
                    queue=queue,
                    message_id=job.message_id,
                    item=job.key,
                    error=type(exc).__name__,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _original_command(body: bytes, max_bytes: int) -> dict[str, Any] | str:
    """The body as the failure event keeps it: the command itself, so it can be
    replayed, unless it is not a JSON object or larger than any command may be
    (then the start of its text, so a 10 MB body is not a 10 MB event)."""
    value = None
    if len(body) <= max_bytes:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            value = None
    if isinstance(value, dict):
        return value
    text = body[:_MAX_COMMAND_TEXT].decode("utf-8", "replace")
    return text if len(body) <= _MAX_COMMAND_TEXT else text + f"... ({len(body)} bytes in all)"


async def _quietly(settling: Any, job: Job) -> None:
    """Ack or nack; on a channel that was replaced, the broker redelivers instead."""
    try:
        await settling
    except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
        log.warning(
            "settle.lost",
            message_id=job.message_id,
            item=job.key,
            error=type(exc).__name__,
            note="the broker will deliver this message again",
        )
