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
publish the broker nacks is published again. `Outcomes.settle` says what it did
as a `Settled`, and reports it to the observer of the lane it serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import structlog

from schemas import FailureEvent, SuccessEvent
from schemas.events import ErrorClass, EventError
from schemas.wire import ASSIGNED_ID_HEADER, ATTEMPTS_HEADER
from worker import tracing
from worker.amqp.acks import Acks
from worker.amqp.deliveries import message_properties
from worker.amqp.publishing import (
    NotPublishedError,
    Publishes,
    RefusedError,
    UnroutableError,
    event_properties,
)
from worker.amqp.topology import Topology
from worker.flow.jobs import Job
from worker.flow.ledger import JobResult, Ledger

if TYPE_CHECKING:
    from pamqp.commands import Basic

    from worker.flow.observer import Observer

__all__ = ["Failed", "HandBack", "Outcome", "Outcomes", "Retry", "Settled", "Succeeded"]

log = structlog.get_logger("worker.flow.outcomes")

_MAX_COMMAND_TEXT = 64 * 1024  # a failure event keeps at most this much of a non-JSON body


@dataclass(frozen=True)
class Succeeded:
    item: dict[str, Any]
    not_applied: tuple[str, ...] = ()
    verified: bool = False  # the answer was lost; reading the item back showed it applied
    coalesced_with: tuple[str, ...] = ()  # message ids applied in the same call (coalescing)
    superseded: tuple[str, ...] = ()  # its fields a later command of that call overwrote


@dataclass(frozen=True)
class Failed:
    error_class: ErrorClass
    code: str
    description: str
    retryable: bool = False
    portal: str | None = None  # the portal the event names, when these outcomes name none


@dataclass(frozen=True)
class Retry:
    reason: str


@dataclass(frozen=True)
class HandBack:
    reason: str


Outcome = Succeeded | Failed | Retry | HandBack


class Settled(Enum):
    """What settling a delivery did."""

    SUCCEEDED = "succeeded"  # success event confirmed, delivery acked
    FAILED = "failed"  # failure event confirmed, delivery acked
    RETRIED = "retried"  # copy confirmed in a delay tier, delivery acked
    HANDED_BACK = "handed_back"  # nacked with requeue: the broker delivers it again
    CRASHED = "crashed"  # a bug: the delivery stays unacked until its channel goes


class _DeliveryGoneError(Exception):
    """The delivery's channel closed before its outcome was confirmed."""


class Outcomes:
    """Settles jobs: publishes what replaces a delivery, then acks it.

    ``publisher`` publishes on a channel with publisher confirms; ``acks`` is
    the worker's one acknowledger, shared with the consumers. One `Outcomes`
    serves one lane, whose ``observer`` hears of every delivery it settles.
    """

    def __init__(
        self,
        *,
        publisher: Publishes,
        acks: Acks,
        topology: Topology,
        max_attempts: int,
        observer: Observer,
        max_message_bytes: int = 1_048_576,
        portal: str | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        """``portal``: the key every event of these outcomes names (None: before any
        portal, such as a command for an unknown one); ``ledger``: where the ends of
        commands that belong to a bulk job are written down."""
        self._portal = portal
        self._ledger = ledger
        self._publisher = publisher
        self._acks = acks
        self._topology = topology
        self._max_attempts = max_attempts
        self._observer = observer
        self._max_message_bytes = max_message_bytes

    async def settle(self, job: Job, outcome: Outcome) -> Settled:
        """Carry out the outcome; never raises (a bug is logged and reported as CRASHED)."""
        try:
            settled = await self._settle(job, outcome)
        except _DeliveryGoneError:
            # Published again after the connection came back, the outcome would be
            # a second event for a command the broker delivers again anyway.
            log.warning(
                "settle.dropped",
                message_id=job.message_id,
                item=job.key,
                note="its channel closed before its outcome was confirmed: "
                "the broker delivers it again",
            )
            settled = Settled.HANDED_BACK
        except Exception:
            # A bug, not an answer. The delivery stays unacked: the broker
            # redelivers it when its channel goes.
            log.exception("settle.crashed", message_id=job.message_id, item=job.key)
            settled = Settled.CRASHED
        self._observer.settled(job, settled)
        tracing.end(
            job.span,
            error=job.failure.value if job.failure else None,
            outcome=settled.value,
            attempts=job.attempts,
        )
        return settled

    async def _settle(self, job: Job, outcome: Outcome) -> Settled:
        if isinstance(outcome, Retry) and job.attempts >= self._max_attempts:
            outcome = Failed(
                ErrorClass.TRANSIENT,
                "ATTEMPTS_EXHAUSTED",
                f"{job.attempts} attempts failed; the last: {outcome.reason}",
                retryable=True,
            )
        message = job.message
        event: SuccessEvent | FailureEvent | None = None
        match outcome:
            case HandBack():
                await self._acks.hand_back(message, message_id=job.message_id)
                return Settled.HANDED_BACK
            case Succeeded():
                event = await self._publish_success(job, outcome)
                settled = Settled.SUCCEEDED
            case Failed():
                job.failure = outcome.error_class
                event = await self._publish_failure(job, outcome)
                settled = Settled.FAILED
            case Retry():
                job.retried_for = outcome.reason
                await self._publish_retry(job)
                settled = Settled.RETRIED
        if event is not None and event.job is not None and self._ledger is not None:
            # Written down before the ack: a delivery the broker gives again after a
            # kill is written again, and the ledger keeps one end per message id.
            await self._ledger.record(_job_result(event))
        if message.delivery_tag is not None:
            self._acks.ack(message.channel, message.delivery_tag, job.message_id)
        return settled

    async def _publish_success(self, job: Job, outcome: Succeeded) -> SuccessEvent:
        command = job.command
        if command is None:
            raise ValueError("a success needs a parsed command")
        event = SuccessEvent(
            messageId=job.message_id,
            correlationId=job.correlation_id,
            portal=self._portal,
            job=job.bulk_job,
            entityTypeId=command.entityTypeId,
            id=command.id,
            attempts=job.attempts,
            item=outcome.item,
            ignoredFields=list(command.ignored_fields),
            notApplied=list(outcome.not_applied),
            verifiedByReadBack=outcome.verified,
            coalescedWith=list(outcome.coalesced_with),
            superseded=list(outcome.superseded),
        )
        body = event.to_json()
        reply_to = job.message.reply_to
        if not (reply_to and await self._publish(body, reply_to, job, mandatory=True)):
            await self._publish(body, self._topology.result_queue, job)
        return event

    async def _publish_failure(self, job: Job, outcome: Failed) -> FailureEvent:
        command = job.command
        event = FailureEvent(
            messageId=job.message_id,
            correlationId=job.correlation_id,
            portal=self._portal or outcome.portal,
            job=job.bulk_job,
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
            failedAt=datetime.now(UTC),
        )
        body = event.to_json()
        await self._publish(body, self._topology.dead_letter_queue, job)
        reply_to = job.message.reply_to
        if reply_to:
            await self._publish(body, reply_to, job, mandatory=True)
        return event

    async def _publish_retry(self, job: Job) -> None:
        original = job.message
        headers = original.headers
        headers[ATTEMPTS_HEADER] = job.attempts
        if not original.message_id:
            headers[ASSIGNED_ID_HEADER] = job.message_id
        # The broker's client would stamp a random id on a message without one;
        # the copy keeps the id its events are already known by.
        properties = original.copy_properties(
            headers=headers, message_id=original.message_id or job.message_id
        )
        tier = self._topology.tier_queue(self._topology.tier_for(job.attempts))
        await self._publish_message(original.body, properties, tier, job)

    async def _publish(self, body: bytes, queue: str, job: Job, *, mandatory: bool = False) -> bool:
        publishing = tracing.child(job.span, "publish outcome", producer=True)
        headers: dict[str, Any] = {}
        tracing.inject(publishing, headers)
        properties = event_properties(job.message_id, job.correlation_id, headers=headers or None)
        try:
            return await self._publish_message(body, properties, queue, job, mandatory=mandatory)
        finally:
            tracing.end(publishing, queue=queue)

    async def _publish_message(
        self,
        body: bytes,
        properties: Basic.Properties,
        queue: str,
        job: Job,
        *,
        mandatory: bool = True,
    ) -> bool:
        """Publish until the broker confirms; False when a mandatory publish is unroutable.

        Given up once the delivery's channel has closed (`_DeliveryGoneError`): the broker
        delivers it again, and that delivery's outcome is the one reported."""
        delay = 0.1
        while True:
            if job.message.channel.is_closed:
                raise _DeliveryGoneError
            try:
                await self._publisher.publish(
                    body, routing_key=queue, properties=properties, mandatory=mandatory
                )
                return True
            except UnroutableError:
                log.warning(
                    "publish.unroutable", queue=queue, message_id=job.message_id, item=job.key
                )
                return False
            except RefusedError:
                log.warning("publish.nacked", queue=queue, message_id=job.message_id, item=job.key)
            except NotPublishedError as exc:
                log.warning(
                    "publish.failed",
                    queue=queue,
                    message_id=job.message_id,
                    item=job.key,
                    error=str(exc),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _job_result(event: SuccessEvent | FailureEvent) -> JobResult:
    result = JobResult(
        event.job or "",
        event.messageId,
        event.status,
        time.time(),
        portal=event.portal,
        entity_type_id=event.entityTypeId,
        item_id=event.id,
    )
    if isinstance(event, SuccessEvent):
        return result
    return dataclasses.replace(
        result,
        error_class=event.error.error_class,
        code=event.error.code,
        description=event.error.description,
        command=event.command,
        properties=event.properties,
    )


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
