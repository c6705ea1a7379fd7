"""The flow in memory: a `Pipeline` with a scripted caller, a recording publisher and
a channel that keeps the broker's ack rules, so ordering, batching, retries,
settling, pause/resume and drain are tested in milliseconds, without a broker
or a portal.

    flow = MemoryFlow(handler)            # handler(job) -> Decision, as a portal would answer
    async with flow.running():
        await flow.deliver(deal(1, "a"))  # a real Delivery, from pamqp frames
        await flow.until_settled(1)
    flow.caller.calls         # the groups sent, as lists of message ids
    flow.publisher.published  # (queue, properties, body) in publish order
    flow.channel              # what was acked and handed back

The pipeline, the batcher, the ordering gate, the outcomes, the breaker and the
acknowledger are the worker's own; the limiter, the caller (the portal), the
publisher (the broker's confirms), the channel (the broker's side of acks) and
the probe are fakes. The worker's own limiter and caller can be put in their
place (``MemoryFlow(..., limiter=..., caller=...)``), as
``test_operating_budget.py`` does against the sandbox.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from pamqp.commands import Basic

from worker.amqp.acks import Acks
from worker.amqp.deliveries import Delivery, Source
from worker.amqp.publishing import NotPublishedError, RefusedError, UnroutableError
from worker.amqp.topology import Topology
from worker.flow.breaker import Breaker
from worker.flow.calling import Calls, Decision
from worker.flow.jobs import Job
from worker.flow.observer import QuietObserver
from worker.flow.outcomes import Outcomes, Settled
from worker.flow.pipeline import Admission, Pipeline
from worker.limiter import Lease, Leave

TOPOLOGY = Topology(
    update_queue="updates",
    result_queue="results",
    dead_letter_queue="dead",
    retry_delays_s=(5, 30),
)

Handler = Callable[[Job], Decision | Awaitable[Decision]]


def deal(item_id: int, title: str, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": {"title": title, **fields}}


class MemoryChannel:
    """One channel as the broker sees it: which deliveries are unacked, and what goes back.

    An ack or nack of a tag that is not unacked is an error the broker would
    close the channel for. What goes back to the queue does so as a quorum queue
    with a delivery limit takes it (tests/worker/amqp/test_returns.py holds
    RabbitMQ to this): a nack returns the delivery at once, `close` returns
    every delivery still unacked in the order they were delivered, and the
    queue delivers what came back in the order it came back, before anything
    else.
    """

    def __init__(self) -> None:
        self.unacked: set[int] = set()
        self.acked: list[int] = []
        self.nacked: list[int] = []  # handed back, in order
        self.returned: list[int] = []  # back on the queue, in the order it delivers them again
        self.message_ids: dict[int, str | None] = {}
        self.errors: list[str] = []
        self.is_closed = False
        self._tags = itertools.count(1)

    def next_tag(self, message_id: str | None = None) -> int:
        tag = next(self._tags)
        self.unacked.add(tag)
        self.message_ids[tag] = message_id
        return tag

    def close(self) -> None:
        """The channel (or its connection) closes: what is unacked goes back, in order."""
        self.returned.extend(sorted(self.unacked))
        self.unacked.clear()
        self.is_closed = True

    def redelivered_ids(self) -> list[str | None]:
        """The message ids the queue delivers again, in its order."""
        return [self.message_ids[tag] for tag in self.returned]

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        await asyncio.sleep(0)
        covered = sorted(t for t in self.unacked if t <= tag) if multiple else [tag]
        if tag not in self.unacked:
            self.errors.append(f"ack of unknown delivery tag {tag}")
            return
        self.unacked -= set(covered)
        self.acked.extend(covered)

    async def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        await asyncio.sleep(0)
        if tag not in self.unacked:
            self.errors.append(f"nack of unknown delivery tag {tag}")
            return
        self.unacked.discard(tag)
        self.nacked.append(tag)
        self.returned.append(tag)


class MemoryPublisher:
    """Confirms every publish at once, unless told a queue is missing, to refuse some,
    or that its connection is down."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Basic.Properties, bytes]] = []
        self.missing_queues: set[str] = set()
        self.refusals = 0  # the next this many publishes are nacked
        self.down = False  # while set, no publish is confirmed (the connection went)

    async def publish(
        self, body: bytes, *, routing_key: str, properties: Basic.Properties, mandatory: bool
    ) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise NotPublishedError()
        if self.refusals:
            self.refusals -= 1
            raise RefusedError()
        if mandatory and routing_key in self.missing_queues:
            raise UnroutableError()
        self.published.append((routing_key, properties, body))


@dataclass
class ScriptedLimiter:
    """Lets calls go while ``open`` is set; each may carry at most ``room`` commands."""

    room: int = 50
    released: int = 0
    open: asyncio.Event = field(default_factory=asyncio.Event)
    admitted_at: list[float] = field(default_factory=list)  # the loop's time of each leave

    def __post_init__(self) -> None:
        self.open.set()

    async def admit(self, wanted: int) -> Leave:
        await self.open.wait()
        self.admitted_at.append(asyncio.get_running_loop().time())
        return Leave(Lease("lease", "crm.item.update", min(wanted, self.room), 0.0, 0.0), 0.0)

    async def release(self, leave: Leave) -> None:
        self.released += 1


@dataclass
class ScriptedCaller:
    """The portal, as a function from a job to its decision (httpx's MockTransport, for calls)."""

    handler: Handler
    calls: list[list[str]] = field(default_factory=list)

    async def send(self, jobs: list[Job], leave: Leave) -> list[tuple[Job, Decision]]:
        self.calls.append([job.message_id for job in jobs])
        decided = []
        for job in jobs:
            decision = self.handler(job)
            if inspect.isawaitable(decision):
                decision = await decision
            decided.append((job, decision))
        return decided


class MemoryConsumption:
    """Records who holds deliveries back."""

    def __init__(self) -> None:
        self.holders: set[str] = set()
        self.history: list[str] = []

    async def hold(self, holder: str) -> None:
        self.holders.add(holder)
        self.history.append(f"hold {holder}")

    async def release(self, holder: str) -> None:
        self.holders.discard(holder)
        self.history.append(f"release {holder}")


class RecordingObserver(QuietObserver):
    """Every settled delivery, in order, with what settling did."""

    def __init__(self) -> None:
        self.ends: list[tuple[str, Settled]] = []
        self.retried_for: dict[str, str | None] = {}  # why each was sent to a delay tier
        self.down: list[tuple[str, str]] = []
        self.up = 0
        self.sources: list[Source] = []

    def consumed(self, source: Source, published_at: datetime | None = None) -> None:
        self.sources.append(source)

    def settled(self, job: Job, settled: Settled) -> None:
        self.ends.append((job.message_id, settled))
        if settled is Settled.RETRIED:
            self.retried_for[job.message_id] = job.retried_for

    def portal_down(self, state: str, code: str) -> None:
        self.down.append((state, code))

    def portal_up(self) -> None:
        self.up += 1


class MemoryFlow:
    """One portal's pipeline wired to the fakes above."""

    def __init__(
        self,
        handler: Handler,
        *,
        batch_size: int = 50,
        linger_s: float = 0.005,
        room: int = 50,
        max_attempts: int = 5,
        probe: Callable[[], Awaitable[str | None]] | None = None,
        limiter: Admission | None = None,
        caller: Calls | None = None,
        backlog: Callable[[], bool] = lambda: False,
        coalesce: bool = False,
        consumption: MemoryConsumption | None = None,
    ) -> None:
        """``limiter`` and ``caller`` replace the scripted ones (a real `CallLimiter`
        and `Caller` against a portal, say); ``handler`` and ``room`` then go unused."""
        self.channel = MemoryChannel()
        self.publisher = MemoryPublisher()
        self.limiter = ScriptedLimiter(room=room)
        self.caller = ScriptedCaller(handler)
        self.consumption = consumption or MemoryConsumption()
        self.observer = RecordingObserver()
        self.acks = Acks(delay_s=0.0)
        self.probes = 0
        self._probe = probe
        self.pipeline = Pipeline(
            portal="acme",
            outcomes=Outcomes(
                publisher=self.publisher,
                acks=self.acks,
                topology=TOPOLOGY,
                max_attempts=max_attempts,
                observer=self.observer,
            ),
            limiter=limiter or self.limiter,
            caller=caller or self.caller,
            breaker=Breaker(probe=self._probed, first_pause_s=0.001, max_pause_s=0.001),
            consumption=self.consumption,
            observer=self.observer,
            topology=TOPOLOGY,
            max_message_bytes=1_048_576,
            batch_size=batch_size,
            linger_s=linger_s,
            backlog=backlog,
            coalesce=coalesce,
        )

    async def _probed(self) -> str | None:
        self.probes += 1
        return None if self._probe is None else await self._probe()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MemoryFlow]:
        task = asyncio.create_task(self.pipeline.run())
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.pipeline.close()
            await self.acks.flush()
            assert self.channel.errors == []

    def delivery(
        self,
        command: dict[str, Any] | bytes,
        *,
        message_id: str | None = None,
        reply_to: str | None = None,
        headers: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Delivery:
        body = command if isinstance(command, bytes) else json.dumps(command).encode()
        tag = self.channel.next_tag(message_id)
        raw = SimpleNamespace(
            body=body,
            channel=self.channel,
            delivery=Basic.Deliver(delivery_tag=tag, routing_key=TOPOLOGY.update_queue),
            header=SimpleNamespace(
                properties=Basic.Properties(
                    message_id=message_id,
                    reply_to=reply_to,
                    headers=headers,
                    content_type=content_type,
                    delivery_mode=2,
                )
            ),
        )
        return Delivery(raw)  # type: ignore[arg-type]

    async def deliver(
        self, command: dict[str, Any] | bytes, *, source: Source = "update", **options: Any
    ) -> Delivery:
        delivery = self.delivery(command, **options)
        await self.pipeline.accept(delivery, source)
        return delivery

    async def until(self, check: Callable[[], bool], timeout_s: float = 2.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not check():
            if loop.time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.001)

    async def until_settled(self, count: int, timeout_s: float = 2.0) -> None:
        await self.until(lambda: len(self.observer.ends) >= count, timeout_s)
        await self.acks.flush()

    def events(self, queue: str) -> list[dict[str, Any]]:
        return [json.loads(body) for name, _, body in self.publisher.published if name == queue]

    def titles(self, queue: str = "results") -> list[str]:
        return [event["item"]["title"] for event in self.events(queue)]
