"""Deliveries in: the work queues (UPDATE_QUEUE, or with SHARDS > 0 each shard
queue), the queue of returning retry copies, and the queue of messages the
broker dead-lettered. Each queue on a channel of its own with a bounded
prefetch, handing every delivery to the pipeline.

Consumers are registered on the broker client's underlying channels, so a
delivery reaches the pipeline as a light `Delivery` read from its frames. The
robust connection reopens the channels (and their prefetch) after a
connection loss, but knows nothing of these consumers: the watcher consumes
again on the new channel, as it does when the server cancels a consumer (its
queue was deleted and declared again, for example).

Consumption is held back while any portal holds it (`hold`, `release`: a
portal-wide state), and stopped for good on shutdown (`stop`). With portal
queues, a portal that holds consumption holds back only its own: its queue's
channel is closed once the acks written on it have landed (`Acks.landed`), which
gives what the worker held of that portal back to its queue, in delivery order,
and a new channel consumes it again on `release`; the shared UPDATE_QUEUE is held
back only for the portal it serves (the default portal's commands without the
header). The portal queues' channels are spread over connections of their own
(PORTAL_CONNECTIONS), so that no portal's first deliveries wait, in one
ordered stream, behind everything the others were sent first. Retry copies
and the poison queue are never held for one portal. Neither cancels a
consumer: each holds back what its queue delivers meanwhile (unacknowledged,
not handed on), and hands it on, in queue order, on `release` (`queue_order`);
on shutdown the connection's close gives it back to the queue. A cancel would
break an item's order (tests/worker/amqp/test_returns.py): the client drops
what the broker delivered before the cancel reached it, so those deliveries sit
unacknowledged on the channel until it closes, and a channel closed after a
cancel gives them back ahead of older unacknowledged ones. Closed without a
cancel, it gives back everything in delivery order.

Shards. A shard queue has a single active consumer: the broker delivers to the
first consumer registered, and when that one goes, to the next in line.

- PREFETCH is shared out: each shard's consumer holds at most PREFETCH // SHARDS
  deliveries (at least one), so a worker holds about PREFETCH in all, however
  many shards it is active on.
- Spreading. At start, and when several shards were lost at once (a reconnect),
  a worker claims shards no one consumes yet, in an order of its own, one at a
  time with a pause between claims, and no more than its share: the shards
  divided by the workers, counted as the poison queue's consumers; each claim
  under a lock on the shard, so that two workers never both take one shard to
  be theirs. Then it registers on the other shards, where it waits in line.
  Workers that start within the claim window share the shards out; a worker
  that starts alone takes them all and keeps them: the broker never moves a
  shard to a worker that registers later, only to the next in line when the
  active one goes.
- A queue named UPDATE_QUEUE left from before SHARDS is consumed too, while
  it exists, as before: it drains what producers not yet pointed at the
  exchange still send there, without the order across workers.
- A shard's consumer held back, rather than cancelled, also keeps the next
  worker in line from becoming active while this one still holds earlier
  commands of the same items; when the connection closes, they go back to the
  queue in their order and in one step with the consumer's end, so the next
  worker in line starts from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from worker.amqp.acks import Acks
from worker.amqp.aiormq_internals import check_channel, consumer_tags
from worker.amqp.backlog import consumer_counts
from worker.amqp.deliveries import Delivery, Source
from worker.amqp.nodes import bare_channel, exists
from worker.amqp.topology import Topology, declare_claim_lock, release_claim_lock

__all__ = ["CLAIM_WINDOW_S", "Consumers", "queue_order"]

log = structlog.get_logger("worker.amqp.consumer")

# How long a worker alone takes to claim every shard; workers starting within it
# share them out.
CLAIM_WINDOW_S = 2.0
# Channels opened side by side for a deployment's portal queues.
_OPENING_CHANNELS = 16


@dataclass
class _Feed:
    """One queue consumed on a channel of its own."""

    source: Source
    queue: str
    prefetch: int
    sharded: bool
    channel: AbstractChannel | None = None
    # The consumer's tag and the channel of that moment; None while not consuming.
    registered: tuple[str, aiormq.abc.AbstractChannel] | None = None
    # While paused (shards only): deliveries kept back from the pipeline, in order.
    held: list[DeliveredMessage] | None = None
    leftover: bool = False  # UPDATE_QUEUE from before SHARDS: dropped once it is deleted
    portal: str | None = None  # the portal whose queue this is (portal queues)
    # Delivered to since it was registered: the active one of a single-active-consumer
    # queue (a consumer waiting in line gets nothing).
    active: bool = False


class Consumers:
    def __init__(
        self,
        *,
        connection: AbstractConnection,
        topology: Topology,
        prefetch: int,
        handle: Callable[[Delivery, Source], Awaitable[None]],
        acks: Acks,
        portal_prefetch: Mapping[str, int] | None = None,
        shared_portal: str | None = None,
        claim_window_s: float = CLAIM_WINDOW_S,
        rng: random.Random | None = None,
        connect: Callable[[], Awaitable[AbstractConnection]] | None = None,
        spread: int = 0,
        batch: int = 1,
    ) -> None:
        """``portal_prefetch``: each portal queue's prefetch, by portal (portal queues);
        ``shared_portal``: the portal whose hold holds back UPDATE_QUEUE there;
        ``connect``, ``spread`` and ``batch``: the portal queues whose prefetch
        is more than one call of ``batch`` are consumed over up to ``spread``
        connections of their own, made by ``connect`` as they are needed (none:
        over ``connection``)."""
        self._connection = connection
        self._connect = connect if spread > 0 else None
        self._spread = spread
        self._batch = batch
        # The portal queues' connections, how many queues each one's channels
        # consume, and the connection of each portal queue.
        self._spread_over: dict[AbstractConnection, int] = {}
        self._consumed_over: dict[str, AbstractConnection] = {}
        self._acks = acks
        self._handle = handle
        self._claim_window_s = claim_window_s
        self._rng = rng or random.Random()  # noqa: S311 - an order, not a secret
        sharded = topology.shards > 0
        work = max(1, prefetch // topology.shards) if sharded else prefetch
        side = max(10, prefetch // 4)
        self._feeds = [_Feed("update", name, work, sharded) for name in topology.work_queues]
        if topology.portal_queues:
            prefetch_of = portal_prefetch or {}
            self._feeds = [_Feed("update", topology.update_queue, prefetch, False)]
            self._feeds += [
                _Feed(
                    "update",
                    topology.portal_queue(key),
                    prefetch_of.get(key, prefetch),
                    True,
                    portal=key,
                )
                for key in topology.portals
            ]
        self._portal_queues = topology.portal_queues
        self._by_portal = {feed.portal: feed for feed in self._feeds if feed.portal}
        self._shared_portal = shared_portal
        self._feeds.append(_Feed("retry", topology.retry_queue, side, False))
        self._feeds.append(_Feed("poison", topology.poison_queue, side, False))
        self._poison_queue = topology.poison_queue
        self._topology = topology
        self._leftover = _Feed("update", topology.update_queue, work, False, leftover=True)
        self._lock = asyncio.Lock()
        self._holders: set[str] = set()
        self._stopped = False
        self.consuming = False

    @property
    def registrations(self) -> dict[str, tuple[str, aiormq.abc.AbstractChannel]]:
        """Each consumed queue's consumer tag and the channel it was registered on."""
        return {feed.queue: feed.registered for feed in self._feeds if feed.registered}

    @property
    def held(self) -> int:
        """Deliveries held back while paused or stopped, not yet handed on."""
        return sum(len(feed.held) for feed in self._feeds if feed.held is not None)

    @property
    def _shards(self) -> list[_Feed]:
        return [feed for feed in self._feeds if feed.sharded]

    async def open(self) -> None:
        if (
            self._shards
            and not self._portal_queues
            and await exists(self._connection, self._leftover.queue, exchange=False)
        ):
            log.warning(
                "consumer.unsharded_queue",
                queue=self._leftover.queue,
                note="consumed until it is deleted; commands published to it keep no order "
                "across workers: point producers at the exchange of that name",
            )
            self._feeds.insert(len(self._shards), self._leftover)
        others = [feed for feed in self._feeds if feed.portal is None]
        for feed in others:
            channel = await self._open(feed)
            await channel.get_queue(feed.queue, ensure=True)  # a missing queue fails here, clearly
        # A deployment may serve a thousand portals: their channels open side by side.
        portals = [feed for feed in self._feeds if feed.portal is not None]
        spread = [feed for feed in portals if self._spreads(feed)]
        if spread:
            await self._add_connections(min(self._spread, len(spread)))
        await asyncio.gather(
            *(
                self._open_each(portals[start::_OPENING_CHANNELS])
                for start in range(min(_OPENING_CHANNELS, len(portals)))
            )
        )

    async def _open_each(self, feeds: Sequence[_Feed]) -> None:
        for feed in feeds:
            await self._open(feed)

    @property
    def connected(self) -> bool:
        """Every connection the portal queues are consumed over is open."""
        return not any(connection.is_closed for connection in self._spread_over)

    async def _connection_for(self, feed: _Feed) -> AbstractConnection:
        """Where a portal queue is consumed: the least used of the portals'
        connections; a new one when each carries a queue already and there are
        fewer than ``spread`` (`open` makes those its portals need at once).

        One connection carries what its queues deliver as one stream, read in
        order: a portal whose consumer was registered after the others' would
        wait behind everything they were sent first, a few thousand deliveries
        at start. Over a few connections, each portal's first deliveries come
        in side by side with the others'. A portal queue whose prefetch is one
        call stays on the main connection: its first call needs all of it
        anyway, and read one queue after the other, the first calls leave one
        after the other, most of them sooner than when every portal's first
        call waits for deliveries read side by side with everyone's (measured
        with 200 such portals: first calls at a median of 1.9 s on one
        connection, 2.1 s over 4, 2.5 s over 16).
        """
        if not self._spreads(feed):
            return self._connection
        if len(self._spread_over) < self._spread and all(self._spread_over.values()):
            await self._add_connections(1)
        connection = min(self._spread_over, key=self._spread_over.__getitem__)
        self._spread_over[connection] += 1
        self._consumed_over[feed.queue] = connection
        return connection

    def _spreads(self, feed: _Feed) -> bool:
        return feed.portal is not None and self._connect is not None and feed.prefetch > self._batch

    async def _add_connections(self, count: int) -> None:
        connect = self._connect
        if connect is None:
            return
        for connection in await asyncio.gather(*(connect() for _ in range(count))):
            self._spread_over[connection] = 0

    def _let_go(self, feed: _Feed) -> None:
        """The feed's channel is closed: its connection carries one queue fewer."""
        connection = self._consumed_over.pop(feed.queue, None)
        if connection is not None:
            self._spread_over[connection] -= 1

    async def close_connections(self) -> None:
        """Close the portal queues' connections: what they held goes back to the
        queues, in the order it was delivered."""
        for connection in self._spread_over:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _open(self, feed: _Feed) -> AbstractChannel:
        connection = await self._connection_for(feed)
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=feed.prefetch)
            check_channel(await channel.get_underlay_channel())
        except Exception:
            self._let_go(feed)  # its connection carries no channel of it
            raise
        feed.channel = channel
        return channel

    async def start(self) -> None:
        async with self._lock:
            # The poison queue first: other workers count this one by its consumer there.
            poison = self._feeds[-1]
            await self._consume(poison)
            # The other queues alongside the claim, not after it: a claim waits out
            # the claim window when it leaves shards to other workers, and its
            # answers wait behind the deliveries of what it has claimed already.
            others = [feed for feed in reversed(self._feeds[:-1]) if not feed.sharded]
            await asyncio.gather(self._claim(self._shards), *map(self._consume, others))
        self.consuming = True
        log.info("consumer.started", queues=[feed.queue for feed in self._feeds])

    async def pause(self, *, keep: tuple[Source, ...] = ("poison",)) -> None:
        """Hand on no more deliveries (except from `keep`): hold back what comes."""
        async with self._lock:
            for feed in self._feeds:
                if feed.source not in keep and feed.held is None:
                    feed.held = []
        log.info("consumer.paused")

    async def resume(self) -> None:
        async with self._lock:
            for feed in self._feeds:
                if feed.registered is None and not feed.sharded:
                    await self._consume(feed)
            await self._claim([feed for feed in self._shards if feed.registered is None])
            for feed in self._feeds:
                await self._release(feed)
        log.info("consumer.resumed")

    async def hold(self, holder: str) -> None:
        """Stop taking deliveries while ``holder`` (a portal that is down) holds them back.

        With portal queues, only the holder's own: its queue's deliveries go back
        to the queue, and UPDATE_QUEUE is held back when it is the shared portal.
        Without, every queue but the poison queue holds back what comes.
        """
        if self._portal_queues:
            await self._hold_portal(holder)
            return
        first = not self._holders
        self._holders.add(holder)
        if first:
            await self.pause()

    async def release(self, holder: str) -> None:
        """``holder`` no longer holds deliveries back; they flow when no one does."""
        if holder not in self._holders:
            return
        self._holders.discard(holder)
        if self._portal_queues:
            await self._release_portal(holder)
        elif not self._holders and not self._stopped:
            await self.resume()

    async def _hold_portal(self, portal: str) -> None:
        self._holders.add(portal)
        async with self._lock:
            feed = self._by_portal.get(portal)
            if feed is not None:
                await self._give_back(feed)
            if portal == self._shared_portal:
                shared = self._feeds[0]
                if shared.held is None:
                    shared.held = []
        log.info("consumer.portal_held", portal=portal)

    async def _release_portal(self, portal: str) -> None:
        if self._stopped:
            return
        async with self._lock:
            feed = self._by_portal.get(portal)
            if feed is not None and feed.channel is None:  # given back while it was down
                await self._again(self._reconsume(feed), [feed])
            if portal == self._shared_portal:
                await self._release(self._feeds[0])
        log.info("consumer.portal_released", portal=portal)

    async def _reconsume(self, feed: _Feed) -> None:
        """Consume a portal queue that was given back, on a channel of its own again."""
        if feed.channel is None:
            await self._open(feed)
        await self._consume(feed)

    def _unconsumed(self) -> list[_Feed]:
        """Portal queues this worker should consume and does not: given back (a hold,
        a hand-over) and not consumed again because the broker was lost meanwhile.
        Not one whose channel is closed: it reopens with its connection, and is
        consumed at a later look."""
        if not self.consuming or self._stopped:
            return []
        return [
            feed
            for feed in self._feeds
            if feed.portal is not None
            and feed.portal not in self._holders
            and feed.registered is None
            and (feed.channel is None or not feed.channel.is_closed)
        ]

    async def add_portal(self, portal: str, prefetch: int) -> None:
        """Consume a portal's queue from now on (a portal registered at run time)."""
        async with self._lock:
            if portal in self._by_portal or self._stopped:
                return
            feed = _Feed(
                "update", self._topology.portal_queue(portal), prefetch, True, portal=portal
            )
            # Before the poison queue's feed, with the other portals' (see start).
            self._feeds.insert(len(self._feeds) - 2, feed)
            self._by_portal[portal] = feed
            await self._open(feed)
            if self.consuming:
                await self._consume(feed)

    async def remove_portal(self, portal: str) -> None:
        """Consume a portal's queue no more (a portal removed at run time): what the
        worker held of it goes back to the head of its queue, where it waits."""
        if not self._portal_queues:
            await self.release(portal)  # its lane's hold paused every queue meanwhile
            return
        async with self._lock:
            feed = self._by_portal.pop(portal, None)
            self._holders.discard(portal)
            if feed is None:
                return
            self._feeds.remove(feed)
            await self._give_back(feed)

    async def _give_back(self, feed: _Feed) -> None:
        """Close the feed's channel once its acks have landed: the broker puts what it
        held back at the head of its queue, in delivery order."""
        channel, feed.channel, feed.registered = feed.channel, None, None
        feed.active = False
        self._let_go(feed)
        if channel is None or channel.is_closed:
            return
        await self._acks.landed(await channel.get_underlay_channel())
        await channel.close()

    def active_portals(self) -> list[str]:
        """The portals whose queue this worker is the active consumer of, as far as it
        knows: claimed, or delivered to since its consumer was registered."""
        return [
            feed.portal
            for feed in self._feeds
            if feed.portal is not None and feed.active and feed.registered is not None
        ]

    async def replicas(self) -> int:
        """The workers consuming the poison queue: each has one consumer there."""
        async with bare_channel(self._connection) as channel:
            return await _consumer_count(channel, self._poison_queue)

    async def stop(self) -> None:
        """Take no more deliveries (shutting down); what is held stays held."""
        self._stopped = True
        self.consuming = False
        await self.pause(keep=())

    async def close(self) -> None:
        for feed in self._feeds:
            if feed.channel is not None and not feed.channel.is_closed:
                await feed.channel.close()

    async def _deliver(self, raw: DeliveredMessage, source: Source) -> None:
        delivery = Delivery(raw)
        try:
            await self._handle(delivery, source)
        except Exception:
            # A bug, not an outcome: give the message back, so the broker
            # counts its deliveries and dead-letters one that keeps failing.
            log.exception("consumer.handler_crashed", message_id=delivery.message_id)
            await self._acks.hand_back(delivery)

    async def _consume(self, feed: _Feed) -> None:
        if feed.channel is None:
            raise RuntimeError("open() the consumers first")
        channel = await feed.channel.get_underlay_channel()

        async def on_message(raw: DeliveredMessage) -> None:
            feed.active = True
            held = feed.held
            if held is not None:
                held.append(raw)
                return
            await self._deliver(raw, feed.source)

        ok = await channel.basic_consume(feed.queue, on_message, no_ack=False)
        if ok.consumer_tag is None:  # pragma: no cover - the broker always names it
            raise aiormq.exceptions.AMQPError("the broker gave the consumer no tag")
        feed.registered = (ok.consumer_tag, channel)

    async def _release(self, feed: _Feed) -> None:
        """Hand on what a paused queue held back, in queue order; then deliver as it comes."""
        held = feed.held
        if held is None:
            return
        held[:] = queue_order(held)
        while held:  # deliveries arriving meanwhile join the end of the list
            raw = held.pop(0)
            if not raw.channel.is_closed:  # otherwise the broker delivers it again
                await self._deliver(raw, feed.source)
        feed.held = None

    async def _claim(self, feeds: Sequence[_Feed]) -> None:
        """Register on these single-active-consumer queues: first on those no worker
        consumes, up to this worker's share; then on the rest, to wait in line."""
        if not feeds:
            return
        # A count of a queue gone meanwhile closes its channel: a bare one stays closed.
        async with bare_channel(self._connection) as probe:
            if self._portal_queues:
                claimed, in_line, left_free = await self._claim_at_once(probe, feeds)
            else:
                claimed, in_line, left_free = await self._claim_one_by_one(probe, feeds)
        if left_free:
            # Left for the other workers to claim; whatever they leave is ours after all.
            await asyncio.sleep(self._claim_window_s)
        for feed in in_line:
            await self._consume(feed)
        log.info("consumer.shards", claimed=claimed, in_line=[feed.queue for feed in in_line])

    async def _claim_one_by_one(
        self, probe: aiormq.abc.AbstractChannel, feeds: Sequence[_Feed]
    ) -> tuple[list[str], list[_Feed], bool]:
        """Shards: one at a time with a pause between, so that workers starting
        together share them out. Returns what was claimed, what waits in line, and
        whether some were left free for the others."""
        step_s = self._claim_window_s / len(self._shards)
        claimed: list[str] = []
        in_line: list[_Feed] = []
        left_free = False
        for feed in self._rng.sample(list(feeds), len(feeds)):
            if claimed:
                await asyncio.sleep(step_s)
            if await _consumer_count(probe, feed.queue) != 0:
                in_line.append(feed)
            elif len(claimed) >= _share(
                len(self._shards), await _consumer_count(probe, self._poison_queue)
            ):
                in_line.append(feed)
                left_free = True
            elif await self._take(feed):
                claimed.append(feed.queue)
            else:
                in_line.append(feed)  # another worker took it meanwhile
        return claimed, in_line, left_free

    async def _take(self, feed: _Feed) -> bool:
        """Consume a shard if no worker does, counted and registered under a lock.

        The broker makes the first consumer registered the active one and does
        not tell it so. Two workers counting no consumer at the same moment would
        both register and both count the shard as theirs: the one behind waits in
        line there, claims no other shard in its place, and, when both start with
        the same order, can end up applying nothing. The lock is an exclusive
        queue named after the shard: only one connection can declare it, and it
        lives from the count until the broker confirmed the registration."""
        async with bare_channel(self._connection) as channel:
            try:
                await declare_claim_lock(channel, feed.queue)
            except aiormq.exceptions.ChannelLockedResource:
                return False  # another worker is taking it now
            try:
                if await _consumer_count(channel, feed.queue):
                    return False
                await self._consume(feed)
                return True
            finally:
                # Closed by an error: the lock goes with the connection. Until then
                # the others wait in line on the shard, which makes one of them
                # active if this worker did not register.
                if not channel.is_closed:
                    await release_claim_lock(channel, feed.queue)

    async def _claim_at_once(
        self, probe: aiormq.abc.AbstractChannel, feeds: Sequence[_Feed]
    ) -> tuple[list[str], list[_Feed], bool]:
        """Portal queues: every count first, then every claim together. A portal's
        pace, not a worker's CPU, bounds its throughput, and once one portal's
        deliveries flow, each answer of a one-by-one claim would wait behind them.
        The counts are read over a few channels side by side: a thousand one after
        the other took 0.44 s of the start."""
        counts = await consumer_counts(self._connection, [feed.queue for feed in feeds])
        # A queue gone since it was declared is not free: consuming it will say why.
        free = [feed for feed in feeds if counts.get(feed.queue) == 0]
        share = _share(len(self._shards), await _consumer_count(probe, self._poison_queue))
        mine = self._rng.sample(free, min(share, len(free)))
        taken = {id(feed) for feed in mine}
        await asyncio.gather(*(self._consume(feed) for feed in mine))
        for feed in mine:
            feed.active = True  # nobody consumed it: this worker's consumer is the active one
        in_line = [feed for feed in feeds if id(feed) not in taken]
        return [feed.queue for feed in mine], in_line, len(free) > len(mine)

    async def watch_cancellations(self, interval_s: float = 1.0) -> None:
        """Consume again on a channel that was reopened, or whose consumer the server
        cancelled; and a portal queue given back that could not be consumed again."""
        while True:
            await asyncio.sleep(interval_s)
            async with self._lock:
                lost: list[_Feed] = []
                for feed in self._feeds:
                    if feed.registered is None or feed.channel is None:
                        continue
                    tag, channel = feed.registered
                    if not channel.is_closed and tag in consumer_tags(channel):
                        continue
                    try:
                        current = await asyncio.wait_for(
                            feed.channel.get_underlay_channel(), interval_s
                        )
                    except Exception:  # noqa: S112 - still reconnecting: look again next time
                        continue
                    if current.is_closed:
                        continue
                    reason = "channel_reopened" if current is not channel else "cancelled_by_server"
                    log.warning("consumer.lost", queue=feed.queue, reason=reason)
                    if feed.held is not None:
                        feed.held = []  # those deliveries went back with their channel
                    lost.append(feed)
                # A consumer that cannot be registered again keeps its old entry:
                # the next look tries again (the queue may be gone for good).
                for feed in lost:
                    if feed.leftover and await self._gone(feed.queue):
                        log.info("consumer.unsharded_queue_gone", queue=feed.queue)
                        self._feeds.remove(feed)
                    elif not feed.sharded:
                        await self._again(self._consume(feed), [feed])
                shards = [feed for feed in lost if feed.sharded]
                await self._again(self._claim(shards), shards)
                for feed in self._unconsumed():
                    log.warning("consumer.lost", queue=feed.queue, reason="given_back")
                    await self._again(self._reconsume(feed), [feed])

    @staticmethod
    async def _again(registering: Awaitable[None], feeds: list[_Feed]) -> None:
        try:
            await registering
        except Exception as exc:
            queues = [feed.queue for feed in feeds]
            log.error("consumer.reconsume_failed", queues=queues, error=type(exc).__name__)

    async def _gone(self, queue: str) -> bool:
        try:
            return not await exists(self._connection, queue, exchange=False)
        except Exception:  # still reconnecting: not known to be gone
            return False


def queue_order(held: Sequence[DeliveredMessage]) -> list[DeliveredMessage]:
    """What a paused queue held back, in the order of the queue.

    While paused, a consumer stays registered and holds what arrives. What the
    worker handed back meanwhile (the commands it held when its portal went
    down) can come straight back to it, after deliveries later in the queue: a
    quorum queue with a delivery limit delivers what was given back ahead of
    everything else. So the redelivered go first, each group in the order it
    came.
    """
    redelivered = [raw for raw in held if getattr(raw.delivery, "redelivered", False)]
    return redelivered + [raw for raw in held if not getattr(raw.delivery, "redelivered", False)]


def _share(shards: int, workers: int) -> int:
    """The shards one of `workers` claims at most."""
    return -(-shards // max(1, workers))


async def _consumer_count(channel: aiormq.abc.AbstractChannel, queue: str) -> int:
    """The queue's consumers; on a single-active-consumer queue, only the active one."""
    declared = await channel.queue_declare(queue, passive=True)
    return int(declared.consumer_count or 0)
