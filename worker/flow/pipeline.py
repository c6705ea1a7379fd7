"""decode -> validate -> ordering gate -> batcher -> call -> outcome, for each delivery.

`accept` takes a delivery from the consumer and returns at once; the job then
moves on its own: it waits for its item in the ordering gate, joins a batch,
is sent at the limiter's pace, and is settled by `Outcomes` (publish, confirm,
ack). A job that must be sent again (a rate limit) rejoins the batcher, still
holding its item; a job retried through a delay tier parks its item until the
copy returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from schemas import CommandValidationError, parse_command
from schemas.events import ErrorClass
from schemas.wire import DELIVERY_COUNT_HEADER, JSON_CONTENT_TYPES
from worker.amqp.deliveries import Delivery, Source
from worker.amqp.topology import Topology
from worker.bitrix import php_query
from worker.flow.batching import Batcher
from worker.flow.calling import Again, Caller, Decision, PortalDown, Ticket
from worker.flow.definitions import FieldDefinitions
from worker.flow.jobs import Job
from worker.flow.ordering import OrderingGate
from worker.flow.outcomes import Failed, HandBack, Outcome, Outcomes

__all__ = ["Pipeline"]

log = structlog.get_logger("worker.flow.pipeline")


class Pipeline:
    def __init__(
        self,
        *,
        outcomes: Outcomes,
        caller: Caller,
        topology: Topology,
        max_message_bytes: int,
        batch_size: int,
        linger_s: float,
        on_portal_down: Callable[[str, str], Awaitable[None]],
        on_settled: Callable[[Job, str], None] = lambda job, done: None,
        definitions: FieldDefinitions | None = None,
    ) -> None:
        self.outcomes = outcomes
        self._caller = caller
        self._topology = topology
        self._max_message_bytes = max_message_bytes
        self._batch_size = batch_size
        self._on_portal_down = on_portal_down
        self._on_settled = on_settled
        self._definitions = definitions
        self.gate = OrderingGate()
        self.batcher: Batcher[Ticket] = Batcher(
            admit=caller.admit,
            count=lambda ticket: ticket.commands,
            dispatch=self._dispatch,
            size=batch_size,
            linger_s=linger_s,
            batchable=self._batchable,
        )
        self.paused = False
        # Set by the worker's drain: commands held behind an item's command stay
        # unacked, and the connection's close returns them after it, in order.
        self.draining = False

    async def accept(self, message: Delivery, source: Source) -> None:
        job = Job.from_message(message, source)
        if source == "poison":
            # Reported however it fails to parse: the poison queue has no delivery
            # limit, so a crash here would hold the message for good.
            try:
                self._parse(job)
            except Exception:
                job.command = None
            await self._settle(job, _poisoned(message))
            return
        try:
            problem = self._decode(job)
        except Exception:
            # A bug, not a bad command: hand the delivery back, so the broker counts
            # it and dead-letters a message that does this every time.
            log.exception("accept.crashed", message_id=job.message_id)
            job.command = None  # it holds no item
            await self._settle(job, HandBack("crashed"))
            return
        if problem is not None:
            await self._settle(job, Failed(ErrorClass.VALIDATION, "VALIDATION", problem))
            return
        if self.paused:
            # Never admitted: it holds no item, whatever item it names.
            await self._settle(job, HandBack("portal down"), holds_item=False)
            return
        key = job.key
        if key is not None and self.gate.admit(key, job):
            await self._ready(job)

    async def reject(self, message: Delivery, source: Source, reason: str) -> None:
        """End a delivery as a validation failure before it reaches the gate (no portal for it)."""
        job = Job.from_message(message, source)
        try:
            self._parse(job)  # for the item the event names; the reason stays the same
        except Exception:
            job.command = None
        failure = Failed(ErrorClass.VALIDATION, "VALIDATION", reason)
        try:
            done = await self.outcomes.settle(job, failure)
        except Exception:
            log.exception("settle.crashed", message_id=job.message_id, item=job.key)
            done = "crashed"
        self._on_settled(job, done)

    async def _ready(self, job: Job) -> None:
        """The job holds its item: check its custom fields against the portal's
        definitions, then queue it for a call."""
        command = job.command
        if self._definitions is not None and command is not None:
            try:
                job.params["fields"] = await self._definitions.check(
                    command.entityTypeId,
                    job.params["fields"],
                    original_uf_names=command.useOriginalUfNames == "Y",
                )
            except CommandValidationError as exc:
                await self._settle(job, Failed(ErrorClass.VALIDATION, "VALIDATION", exc.reason))
                return
        # Encoded once, for every time the job may travel in a batch; params a
        # query string cannot carry unchanged make the job go alone.
        try:
            job.query = php_query(job.params)
        except ValueError:
            job.query = None
        self.batcher.add(job)

    def _decode(self, job: Job) -> str | None:
        message = job.message
        size = len(message.body)
        if size > self._max_message_bytes:
            limit = self._max_message_bytes
            return f"the body is {size} bytes; the limit is {limit} (MAX_MESSAGE_BYTES)"
        content_type = (message.content_type or "").split(";")[0].strip().lower()
        if content_type not in JSON_CONTENT_TYPES:
            return f"content type {content_type!r}: a command is JSON (application/json)"
        return self._parse(job)

    @staticmethod
    def _parse(job: Job) -> str | None:
        try:
            job.command = parse_command(job.message.body)
        except CommandValidationError as exc:
            return exc.reason
        job.params = job.command.to_params()
        return None

    def _batchable(self, job: Job) -> bool:
        return self._batch_size > 1 and job.query is not None

    async def _dispatch(self, jobs: list[Job], ticket: Ticket) -> None:
        if self.paused:
            await self._caller.release(ticket)
            await asyncio.gather(*(self._settle(job, HandBack("portal down")) for job in jobs))
            return
        try:
            decisions = await self._caller.send(jobs, ticket)
        except Exception:
            # A bug, not an answer: hand the jobs back. The broker counts the
            # deliveries and dead-letters a message that keeps doing this.
            log.exception("dispatch.crashed", messages=[job.message_id for job in jobs])
            await asyncio.gather(*(self._settle(job, HandBack("crashed")) for job in jobs))
            return
        await asyncio.gather(*(self._after(job, decision) for job, decision in decisions))

    async def _after(self, job: Job, decision: Decision) -> None:
        if isinstance(decision, Again):
            if self.paused:
                await self._settle(job, HandBack("portal down"))
            else:
                self.batcher.add(job)
            return
        if isinstance(decision, PortalDown):
            # Paused first, then back to the broker: the commands waiting behind
            # it for its item follow it back at once, in their order, before the
            # breaker hands back the rest.
            self.paused = True
            await self._settle(job, HandBack(decision.state))
            await self._on_portal_down(decision.state, decision.code)
            return
        await self._settle(job, decision)

    async def _settle(self, job: Job, outcome: Outcome, *, holds_item: bool = True) -> None:
        try:
            done = await self.outcomes.settle(job, outcome)
        except Exception:
            # A bug, not an answer. The delivery stays unacked (the broker
            # redelivers it when the channel goes); its item must not stay held.
            log.exception("settle.crashed", message_id=job.message_id, item=job.key)
            done = "crashed"
        self._on_settled(job, done)
        key = job.key
        if key is None or job.source == "poison" or not holds_item:
            return
        if done == "retried":
            delay = self._topology.tier_for(job.attempts)
            self.gate.park(key, job.message_id, until=time.monotonic() + 2 * delay + 60)
            return
        following = self.gate.release(key)
        if following is not None:
            if self.draining:
                return
            if self.paused:
                await self._settle(following, HandBack("portal down"))
            else:
                await self._ready(following)

    async def hand_back_held(self) -> int:
        """Give the broker back every job not yet sent (a portal-wide state).

        Only the jobs queued for a call go now. Each one's item then hands back
        the commands waiting behind it, in their order; commands waiting behind
        a call still out follow when it ends, and those waiting for a retry copy
        stay held until it returns, so no item's commands change places.
        """
        held = self.batcher.take_all()
        for job in held:
            await self._settle(job, HandBack("handed back"))
        return len(held)

    async def wake_parked(self) -> None:
        """Let items whose retry copy never came back go on."""
        for job in self.gate.expire_parked(time.monotonic()):
            await self._ready(job)


def _poisoned(message: Delivery) -> Failed:
    delivered = message.header(DELIVERY_COUNT_HEADER)
    times = f"{delivered} times" if isinstance(delivered, int) else "too many times"
    return Failed(
        ErrorClass.UNKNOWN,
        "DELIVERY_LIMIT",
        f"the broker dead-lettered this message after it was delivered {times} without being "
        "settled (it may crash the worker); whether the portal applied it is not known: "
        "check the item before replaying it",
    )
