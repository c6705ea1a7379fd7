"""One portal's pipeline: a command's way from its delivery to its settled outcome.

In the order a command travels, each step a method of `Pipeline`:

    accept   a Job (jobs), decoded and validated; it waits for its item's turn (ordering)
    ready    custom fields checked (definitions); encoded once for a batch; queued (batching);
             a command whose bulk job was aborted ends here as `aborted` (ledger)
    run      a group forms when the limiter lets a call go (batching, limiter); with
             COALESCE=safe each command takes along the commands of its item waiting
             behind it that merge safely (coalescing)
    send     one call for the group, a decision per command (calling); a command adding
             fm values has them counted on its item first, and if the answer is lost it
             is read back after the cut-off (readback)
    decided  the decision carried out (outcomes: event, confirm, ack); the item's turn
             passes to its next command

The stages it uses never call back into it. The pipeline alone owns its
portal's up/down cycle: `pause` (a portal-wide answer: send nothing, take no
more deliveries, probe), `resume` (the probe answered) and `drain` (shutting
down). A command that must be sent again (a rate limit, a portal-wide answer,
or, a second later, a call this process had no file descriptor to open) goes
back to the batcher, still holding its item; a command retried through a
delay tier parks its item until the copy returns.

Nothing is handed back to the broker one by one: RabbitMQ gives a closed
channel's deliveries back in delivery order, but a burst of nacks it may give
back out of order, and every nack counts towards the delivery limit
(tests/worker/amqp/test_returns.py). When its portal goes down, the pipeline
lets the calls out end and settle, then asks its consumption to hold: with
portal queues that closes the portal's channel, which gives its deliveries back
to the portal's queue in order, and the pipeline forgets the commands it held of
them; without, they stay in it, unacknowledged and in order. Either way they go
on when the portal answers. A retry copy that comes back while its portal is
down goes round its delay tier again, its attempts not counted, so copies never
fill the retry queue's prefetch that every portal shares. A drain leaves what
the pipeline holds to the connection's close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, assert_never

import structlog

from schemas import CommandValidationError
from schemas.events import ErrorClass
from worker import tracing
from worker.amqp.deliveries import Delivery, Source
from worker.amqp.topology import Topology
from worker.bitrix import php_query
from worker.flow.batching import Batcher
from worker.flow.breaker import Breaker
from worker.flow.calling import Again, Calls, Decision, Doubt, PortalDown
from worker.flow.coalescing import Merge, applied_together, goes_alone
from worker.flow.definitions import FieldDefinitions
from worker.flow.jobs import ItemKey, Job
from worker.flow.ledger import Ledger
from worker.flow.observer import Observer
from worker.flow.ordering import OrderingGate
from worker.flow.outcomes import Failed, HandBack, Outcome, Outcomes, Retry, Settled, Succeeded
from worker.flow.readback import ReadBack
from worker.limiter import Leave

__all__ = ["MAX_CALLS_IN_FLIGHT", "Admission", "Consumption", "Pipeline"]

log = structlog.get_logger("worker.flow.pipeline")

# Calls of one portal out at once; the limiter paces them, this bounds the overlap.
MAX_CALLS_IN_FLIGHT = 4
# How often items whose retry copy never came back are looked for.
PARK_CHECK_S = 5.0

_ABORTED = Failed(
    ErrorClass.ABORTED, "JOB_ABORTED", "its bulk job was aborted before it was sent: not sent"
)


class Admission(Protocol):
    """The portal's limits for a call: `CallLimiter`, or a fake in tests."""

    async def admit(self, wanted: int) -> Leave: ...

    async def release(self, leave: Leave) -> None: ...


class Consumption(Protocol):
    """Where the deliveries come from: held back while any holder (a portal down) asks."""

    async def hold(self, holder: str) -> None: ...

    async def release(self, holder: str) -> None: ...


class Pipeline:
    def __init__(
        self,
        *,
        portal: str,
        outcomes: Outcomes,
        limiter: Admission,
        caller: Calls,
        breaker: Breaker,
        consumption: Consumption,
        observer: Observer,
        topology: Topology,
        max_message_bytes: int,
        batch_size: int,
        linger_s: float,
        definitions: FieldDefinitions | None = None,
        max_in_flight: int = MAX_CALLS_IN_FLIGHT,
        backlog: Callable[[], bool] = lambda: False,
        ledger: Ledger | None = None,
        read_back: ReadBack | None = None,
        coalesce: bool = False,
    ) -> None:
        """``backlog`` tells whether the portal's queue has commands waiting on the
        broker: a group then fills on through gaps (see `Batcher`); ``ledger`` tells
        which bulk jobs were aborted; ``coalesce``: COALESCE=safe."""
        self.portal = portal
        self._coalesce = coalesce
        self._ledger = ledger
        self._read_back = read_back
        self._resolving: set[asyncio.Task[None]] = set()
        self._outcomes = outcomes
        self._limiter = limiter
        self._caller = caller
        self._breaker = breaker
        self._consumption = consumption
        self._observer = observer
        self._topology = topology
        self._max_message_bytes = max_message_bytes
        self._batch_size = batch_size
        self._definitions = definitions
        self._gate = OrderingGate()
        self._batcher: Batcher[Leave] = Batcher(
            admit=limiter.admit,
            count=lambda leave: leave.commands,
            size=batch_size,
            linger_s=linger_s,
            batchable=self._batchable,
            more_coming=backlog,
        )
        self._slots = asyncio.Semaphore(max_in_flight)
        self._sending = asyncio.Event()  # set while groups may be formed and sent
        self._sending.set()
        self._calls: set[asyncio.Task[None]] = set()
        self._probing: asyncio.Task[None] | None = None
        self._draining = False
        self._retired = False
        self._handing_over = False
        self._active_at = time.monotonic()  # when the last delivery came or outcome left

    @property
    def down(self) -> str | None:
        """The portal-wide state the portal is in (``blocked``...), or None while it is up."""
        return self._breaker.state

    @property
    def paused(self) -> bool:
        """Nothing is sent: the portal is down, or the worker is draining."""
        return self._breaker.is_open or self._draining

    @property
    def gate(self) -> OrderingGate:
        return self._gate

    @property
    def calls_out(self) -> int:
        """Calls sent whose commands are not all settled yet."""
        return len(self._calls)

    def idle_since(self) -> float | None:
        """Since when (``time.monotonic()``) the pipeline has had nothing in its care,
        or None while it has: commands held or out, an item parked for its retry
        copy, a command waiting to be read back, the portal down, a hand-over."""
        busy = (
            self._calls
            or self._resolving
            or len(self._batcher)
            or not self._gate.empty
            or self._breaker.is_open
            or self._handing_over
            or self._retired
            or self._draining
        )
        return None if busy else self._active_at

    @property
    def held(self) -> int:
        """Commands the pipeline holds, not in a call: queued for one, or behind their item."""
        return len(self._batcher) + len(self._gate)

    # -- 1. accept: a delivery becomes a job that waits for its item's turn

    async def accept(self, message: Delivery, source: Source) -> None:
        """Take a delivery of the work or retry queue; returns once it is queued or settled."""
        self._active_at = time.monotonic()
        self._observer.consumed(source, message.timestamp)
        job = Job.from_message(message, source)
        job.span = tracing.start_command(message.headers)
        validating = tracing.child(job.span, "validate")
        try:
            problem = job.decode(max_bytes=self._max_message_bytes)
            tracing.end(validating, error=problem)
        except Exception:
            tracing.end(validating, error="crashed")
            # A bug, not a bad command: hand the delivery back, so the broker counts
            # it and dead-letters a message that does this every time.
            log.exception("accept.crashed", message_id=job.message_id)
            job.command = None  # it holds no item
            await self._settle(job, HandBack("crashed"))
            return
        if problem is not None:
            await self._settle(job, Failed(ErrorClass.VALIDATION, "VALIDATION", problem))
            return
        key = job.key
        if key is None or self._draining:
            # Draining: left unacked; the connection's close gives it back with
            # everything this worker holds, in the order it was delivered.
            return
        if self._retired:
            await self._hand_on(job)
            return
        if source == "retry" and self._breaker.is_open:
            await self._round_again(job)
            return
        if self._gate.admit(key, job):
            await self._ready(job)
        # Otherwise it waits behind its item's earlier command.

    # -- 2. ready: the job holds its item; checked, encoded, queued for a call

    async def _ready(self, job: Job) -> None:
        if self._aborted(job):
            await self._settle(job, _ABORTED)
            return
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
        _encode(job)
        self._batcher.add(job)

    def _aborted(self, job: Job) -> bool:
        bulk_job = job.bulk_job
        return bulk_job is not None and self._ledger is not None and self._ledger.aborted(bulk_job)

    def _batchable(self, job: Job) -> bool:
        return self._batch_size > 1 and job.query is not None

    # -- 3. run: groups leave as the limiter lets calls go

    async def run(self) -> None:
        """Send groups as the limiter lets them go, and free parked items, until cancelled."""
        waking = asyncio.create_task(self._wake_parked())
        try:
            while True:
                await self._sending.wait()
                await self._slots.acquire()
                try:
                    group, leave = await self._batcher.next_group()
                except BaseException:
                    self._slots.release()
                    raise
                call = asyncio.create_task(self._send(group, leave))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)
        finally:
            waking.cancel()

    async def _wake_parked(self) -> None:
        """Let items whose retry copy never came back go on."""
        while True:
            await asyncio.sleep(PARK_CHECK_S)
            for job in self._gate.expire_parked(time.monotonic()):
                await self._ready(job)

    # -- 4. send: one call, a decision per command

    async def _send(self, jobs: list[Job], leave: Leave) -> None:
        try:
            jobs = await self._fresh(jobs)
            # Those whose bulk job was aborted while they waited for this call are not sent.
            aborted: list[Job] = []
            kept: list[Job] = []
            for job in jobs:
                (aborted if self._aborted(job) else kept).append(job)
            if aborted:
                jobs = kept
                await asyncio.gather(*(self._settle(job, _ABORTED) for job in aborted))
            if self.paused or self._handing_over or not jobs:
                # The group formed as the portal went down, the drain began or the
                # queue is being handed over: the jobs wait again (a drain leaves
                # them to the connection's close, a hand-over to its channel's).
                await self._limiter.release(leave)
                self._again(jobs)
                return
            if self._coalesce:
                jobs = [self._merged(job) for job in jobs]
            try:
                if self._read_back is not None:
                    await self._read_back.before(jobs)
                decisions = await self._caller.send(jobs, leave)
            except Exception:
                # A bug, not an answer: hand the jobs back. The broker counts the
                # deliveries and dead-letters a message that keeps doing this.
                log.exception("dispatch.crashed", messages=[job.message_id for job in jobs])
                await asyncio.gather(*(self._hand_back_crashed(job) for job in jobs))
                return
            # A call to be sent again later (`Again.after_s`) holds its slot and its
            # commands meanwhile: the pause is the call's, taken once.
            pause = max((d.after_s for _, d in decisions if isinstance(d, Again)), default=0.0)
            if pause > 0:
                await asyncio.sleep(pause)
            # The doubts of one call are read back together (a merged call's is split).
            doubted: list[Job] = []
            decided = []
            for job, decision in decisions:
                if isinstance(decision, Doubt) and not job.parts:
                    doubted.append(job)
                else:
                    decided.append(self._decided(job, decision))
            if doubted:
                self._resolve_later(doubted)
            await asyncio.gather(*decided)
        finally:
            self._slots.release()

    def _merged(self, lead: Job) -> Job:
        """The job for ``lead``'s call: ``lead`` with the commands of its item waiting
        behind it that merge safely (coalescing), or ``lead`` alone. Nothing here
        waits: the call is to leave at once."""
        key = lead.key
        if key is None or lead.query is None or goes_alone(lead):
            return lead
        merge = Merge([lead])
        while (follower := self._gate.following(key)) is not None:
            if not merge.fits(follower) or not self._ready_now(follower):
                break
            merge.add(self._gate.take_following(key))
        return merge.job()

    def _ready_now(self, job: Job) -> bool:
        """Ready a command waiting for its item as `_ready` would, without waiting: False
        when it cannot be now (its delivery gone back, its bulk job aborted, its custom
        fields needing the definitions loaded or refused by them)."""
        command = job.command
        if command is None or job.message.channel.is_closed or self._aborted(job):
            return False
        if self._definitions is not None:
            try:
                fields = self._definitions.check_now(
                    command.entityTypeId,
                    job.params["fields"],
                    original_uf_names=command.useOriginalUfNames == "Y",
                )
            except CommandValidationError:
                return False
            if fields is None:
                return False
            job.params["fields"] = fields
        _encode(job)
        return job.query is not None

    async def _hand_back_crashed(self, job: Job) -> None:
        """A call that crashed: each command it carried back to the broker."""
        lead, *followers = job.parts or [job]
        for follower in followers:
            await self._settle(follower, HandBack("crashed"), holds_item=False)
        await self._settle(lead, HandBack("crashed"))

    def _resolve_later(self, jobs: list[Job]) -> None:
        """Read the items back once their call can no longer be running; the jobs keep
        their items meanwhile."""
        task = asyncio.create_task(self._resolve(jobs))
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    async def _resolve(self, jobs: list[Job]) -> None:
        if self._read_back is None:  # pragma: no cover - a Doubt comes only with it
            raise RuntimeError("a doubt without read-back")
        for job, outcome in await self._read_back.resolve(jobs):
            # Not applied: once more through a delay tier, counted as an attempt, its
            # values counted again before that call.
            await self._settle(job, outcome or Retry("read back: not applied"))

    # -- 5. decided: the decision carried out, the item's turn passed on

    async def _decided(self, job: Job, decision: Decision) -> None:
        if job.parts:
            await self._decided_together(job, decision)
            return
        match decision:
            case Again():
                self._again([job])
            case PortalDown(state=state, code=code):
                # The job keeps its item and goes again once the portal answers.
                self._again([job])
                await self.pause(state, code)
            case Succeeded() | Failed() | Retry() | HandBack():
                await self._settle(job, decision)
            case Doubt():
                self._resolve_later([job])
            case _:
                assert_never(decision)

    async def _decided_together(self, merged: Job, decision: Decision) -> None:
        """A merged call's decision: each command settled when it was applied; otherwise
        they are put back as they were, or split to go one by one."""
        match decision:
            case Succeeded():
                self._observer.coalesced(len(merged.parts))
                for part, outcome in applied_together(merged, decision):
                    part.attempts += 1
                    # One after the other: the item's events keep their order.
                    await self._outcomes.settle(part, outcome)
                if merged.key is not None:
                    await self._pass_turn(merged.key)
            case Again() | PortalDown():
                # About the call, not its content: they merge again on the next call.
                self._split(merged, alone=False)
                if isinstance(decision, PortalDown):
                    await self.pause(decision.state, decision.code)
            case Failed() | Retry() | HandBack() | Doubt():
                log.info(
                    "coalesced.split",
                    portal=self.portal,
                    item=merged.key,
                    messages=[part.message_id for part in merged.parts],
                    answer=_answer_of(decision),
                )
                self._split(merged, alone=True)
            case _:
                assert_never(decision)

    def _split(self, merged: Job, *, alone: bool) -> None:
        """A merged call not carried out: its first command back to the batcher, the
        others back behind it; ``alone``: each goes in a call of its own from now on."""
        lead, *followers = merged.parts
        for part in merged.parts:
            part.alone = part.alone or alone
        if merged.key is not None:
            self._gate.put_back(merged.key, followers)
        self._again([lead])

    def _again(self, jobs: list[Job]) -> None:
        """Back to the batcher, still holding their items; draining, they stay unacked
        and go back with the connection."""
        if not self._draining:
            for job in jobs:
                self._batcher.add(job)

    async def _round_again(self, job: Job) -> None:
        """A retry copy while the portal is down: once more through its delay tier,
        without an attempt, the item still parked for it."""
        settled = await self._outcomes.settle(job, Retry(f"portal {self._breaker.state}"))
        key = job.key
        if settled is Settled.RETRIED and key is not None:
            delay = self._topology.tier_for(job.attempts)
            self._gate.extend_park(key, job.message_id, until=time.monotonic() + 2 * delay + 60)

    async def _settle(self, job: Job, outcome: Outcome, *, holds_item: bool = True) -> None:
        settled = await self._outcomes.settle(job, outcome)
        self._active_at = time.monotonic()
        key = job.key
        if key is None or not holds_item:
            return
        match settled:
            case Settled.RETRIED:
                delay = self._topology.tier_for(job.attempts)
                self._gate.park(key, job.message_id, until=time.monotonic() + 2 * delay + 60)
            case Settled.SUCCEEDED | Settled.FAILED | Settled.HANDED_BACK | Settled.CRASHED:
                await self._pass_turn(key)
            case _:
                assert_never(settled)

    async def _pass_turn(self, key: ItemKey) -> None:
        """The item's command ended: its next one takes its turn."""
        following = self._gate.release(key)
        if following is None or self._draining:
            # Draining: commands held behind an item's command stay unacked,
            # and the connection's close returns them after it, in order.
            return
        await self._ready(following)

    # -- the portal's up/down cycle, and the end

    async def pause(self, state: str, code: str) -> None:
        """Stop for a portal-wide state: send nothing, take no more deliveries, probe.

        What the pipeline holds stays in it, in order, until the portal answers.
        """
        if not self._breaker.open(state):
            return  # already down: this answer came from a call that was out
        self._sending.clear()
        self._observer.portal_down(state, code)
        self._probing = asyncio.create_task(self._until_up())

    async def _until_up(self) -> None:
        # The calls out end first: what they settled is acked before the hold may
        # close the channel, and what they did not goes back to the batcher.
        while self._calls:
            await asyncio.gather(*list(self._calls), return_exceptions=True)
        try:
            await self._consumption.hold(self.portal)
        except Exception as exc:
            # The broker was lost meanwhile: the channel closed with the connection
            # and gave back what it held all the same. The probe goes on.
            log.error("portal.hold_failed", portal=self.portal, error=type(exc).__name__)
        await self._forget_returned()
        await self._breaker.until_up()
        await self.resume()

    async def _forget_returned(self) -> None:
        """Let go of what the hold gave back to the broker (its channel closed), and
        send the retry copies held round their delay tier again."""
        gone = self._gate.discard(_returned)
        copies = []
        for job in self._batcher.take_all():
            if _returned(job):
                gone += 1
                await self._let_go(job)
            elif job.source == "retry":
                copies.append(job)
            else:
                self._batcher.add(job)
        for job in copies:
            # It held its item: the item stays parked for it.
            await self._settle(job, Retry(f"portal {self._breaker.state}"))
        if gone or copies:
            log.info(
                "portal.let_go", portal=self.portal, returned=gone, copies_round_again=len(copies)
            )

    async def resume(self) -> None:
        """The portal answers again: what waited is sent, and deliveries flow (once no
        other portal holds them)."""
        self._observer.portal_up()
        if not self._draining:
            self._sending.set()
        await self._consumption.release(self.portal)

    async def hand_over(self) -> bool:
        """Let the next worker in line serve this portal's queue; False when not now.

        Not while the portal is down, an item waits for its retry copy (or holds
        it), or a command waits to be read back: those would be overtaken by the
        item's later commands on the other worker. Otherwise nothing more is sent, the
        calls out settle, and the queue's channel closes: what the pipeline held
        goes back to the head of the queue in delivery order, the next consumer
        in line takes the queue over, and this worker's consumer registers again
        at the end of the line.
        """
        if self.paused or self._retired or self._handing_over:
            return False
        if self._gate.retrying or self._resolving:
            return False
        # A call that passed its last look before this line is among the calls out.
        self._handing_over = True
        self._sending.clear()
        try:
            while self._calls:
                await asyncio.gather(*list(self._calls), return_exceptions=True)
            await self._consumption.hold(self.portal)
            await self._forget_returned()
        finally:
            self._handing_over = False
            if not self.paused and not self._retired:
                self._sending.set()
            # Even when the hold failed (the broker lost meanwhile): the queue is this
            # worker's to consume again, at the end of the line.
            await self._consumption.release(self.portal)
        return True

    async def retire(self) -> None:
        """The portal is served no more (removed at run time): nothing more is sent.

        Once the calls out have settled, what it holds of its own queue goes back
        to the head of that queue, where it waits (nothing fails); what came
        through the shared queues goes back to them (`_hand_on`).
        """
        self._retired = True
        self._sending.clear()
        if self._probing is not None:
            self._probing.cancel()
        while self._calls:
            await asyncio.gather(*list(self._calls), return_exceptions=True)
        await self._consumption.hold(self.portal)
        held = self._batcher.take_all() + self._gate.take_waiting()
        for job in held:
            if not _returned(job):
                await self._hand_on(job)
        log.info("portal.retired", portal=self.portal, held=len(held))

    async def _hand_on(self, job: Job) -> None:
        """A command of a retired lane from a shared queue: a retry copy goes round its
        delay tier again, anything else back to its queue."""
        if job.source == "retry":
            await self._outcomes.settle(job, Retry("portal no longer served"))
        else:
            await self._outcomes.settle(job, HandBack("portal no longer served"))

    async def drain(self) -> None:
        """Shutting down: nothing more is sent; wait for the calls already out to settle."""
        self._draining = True
        self._sending.clear()
        while self._calls:
            await asyncio.gather(*list(self._calls), return_exceptions=True)
        # Commands waiting to be read back stay unacked: they go back with the connection.
        for task in list(self._resolving):
            task.cancel()

    async def _fresh(self, jobs: list[Job]) -> list[Job]:
        """The jobs whose delivery's channel is still open.

        A job whose channel closed (the connection was lost, or the broker
        closed the channel) is not sent: the broker delivers it again, and its
        item goes on with that delivery. The commands held behind it for its
        item were delivered on the same channel and are dropped in turn.
        """
        fresh = []
        for job in jobs:
            if not job.message.channel.is_closed:
                fresh.append(job)
                continue
            log.warning(
                "message.dropped",
                message_id=job.message_id,
                item=job.key,
                note="its channel closed before it was sent: the broker delivers it again",
            )
            await self._let_go(job)
        return fresh

    async def _let_go(self, job: Job) -> None:
        """The job's delivery went back to the broker: its item's next command takes
        its turn (draining, it stays unacked and goes back with the connection)."""
        key = job.key
        following = self._gate.release(key) if key is not None else None
        if following is not None and not self._draining:
            await self._ready(following)

    async def close(self) -> None:
        """Stop probing and reading back (the worker is stopping)."""
        if self._probing is not None:
            self._probing.cancel()
        for task in list(self._resolving):
            task.cancel()


def _encode(job: Job) -> None:
    """Encoded once, for every time the job may travel in a batch; params a query
    string cannot carry unchanged make the job go alone."""
    try:
        job.query = php_query(job.params)
    except ValueError:
        job.query = None


def _answer_of(decision: Decision) -> str:
    match decision:
        case Failed(code=code) | Doubt(code=code):
            return code
        case Retry(reason=reason) | HandBack(reason=reason):
            return reason
        case _:
            return type(decision).__name__


def _returned(job: Job) -> bool:
    """The job's delivery went back to the broker with its channel."""
    return job.message.channel.is_closed
