"""The queues the worker uses, declared idempotently at start.

    UPDATE_QUEUE            quorum; the broker dead-letters a delivery that exceeds
                            the delivery limit to the poison queue
    <UPDATE_QUEUE>.poison   what the broker gave up on; the worker turns each one
                            into an ordinary failure event on DEAD_LETTER_QUEUE
    <UPDATE_QUEUE>.retry.Ns one delay tier per N in RETRY_DELAYS_S: a queue-level TTL
                            (never a per-message one: those expire only at the head)
                            dead-letters the copy to the return queue
    <UPDATE_QUEUE>.retry    returned retry copies; consumed on a channel of their
                            own, so a returning copy never waits behind commands the
                            ordering gate holds for the same item
    RESULT_QUEUE, DEAD_LETTER_QUEUE   events

Every queue is a durable quorum queue. Dead-lettering is at-least-once
(quorum queues need `x-overflow: reject-publish` for that).

With SHARDS = N > 0, UPDATE_QUEUE names an exchange instead of a queue:

    UPDATE_QUEUE                 x-consistent-hash exchange, where producers publish
                                 with the item's routing key (`item_routing_key`)
    <UPDATE_QUEUE>.shard.0..N-1  bound to it with weight 1; each like UPDATE_QUEUE
                                 above, plus `x-single-active-consumer`

The exchange sends every command of one item to one shard, and only one worker
at a time consumes a shard, so an item's commands reach one worker in the order
they were published, however many workers run. A queue named UPDATE_QUEUE left
from before is no longer declared; the consumers drain it while it exists.
Changing SHARDS moves items between shards: `declare` refuses shard queues past
the last one. Everything else stays as it was:
a retry copy comes back on the shared `.retry` queue to whichever worker takes
it. The worker that sent the copy away parks the item in its ordering gate
until the copy comes back to it or the park expires (twice the delay plus a
minute); when another worker takes the copy, that one applies it, and the item's
later commands wait on the parking worker until the park expires. A copy that
fails again elsewhere can then be overtaken by those later commands.

With portal queues (several portals configured, SHARDS = 0), UPDATE_QUEUE also
names an exchange, and each portal has a queue of its own:

    UPDATE_QUEUE                  headers exchange, where producers publish; its
                                  alternate exchange takes what no binding matches
    <UPDATE_QUEUE>.portal.<key>   bound with x-b24-portal = <key>; like UPDATE_QUEUE
                                  above, plus `x-single-active-consumer`
    <UPDATE_QUEUE>.unrouted       fanout exchange, the alternate: on to the queue
                                  UPDATE_QUEUE (commands without the header, for a
                                  portal the workers do not serve, or published
                                  straight to the queue by producers of before)

Each portal's commands wait on the broker in a queue of their own: a worker
takes from it at the portal's pace and can give back what it holds (by closing
the queue's channel) while the portal is down, without holding any other
portal back. One worker at a time consumes a portal's queue, so an item's
commands keep their order across workers, as with shards. A portal removed from
the configuration leaves its queue bound: its commands wait there until the
queue is deleted (README, "Many portals").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection

from schemas import wire
from worker.amqp.nodes import bare_channel, exists

__all__ = [
    "DELIVERY_LIMIT",
    "HASH_EXCHANGE_TYPE",
    "HASH_PLUGIN",
    "PORTAL_EXCHANGE_TYPE",
    "Topology",
    "TopologyError",
    "claim_lock",
    "declare",
    "declare_claim_lock",
    "declare_exchange",
    "declare_portal",
    "refuse_leftover_portals",
    "refuse_leftover_shard",
    "release_claim_lock",
]

# High enough that restarts and hand-backs never dead-letter a healthy message;
# low enough that a message crashing the worker stops looping.
DELIVERY_LIMIT = 50
HASH_EXCHANGE_TYPE = "x-consistent-hash"
HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"
PORTAL_EXCHANGE_TYPE = "headers"
# Channels that declare a deployment's many portal queues side by side.
_DECLARING_CHANNELS = 8
# The binding key of a consistent-hash exchange is the queue's weight on the ring.
_SHARD_WEIGHT = "1"


def claim_lock(shard_queue: str) -> str:
    """The exclusive queue a worker holds while it claims the shard: only one
    connection at a time can declare it, and it lives for milliseconds."""
    return f"{shard_queue}.claim"


async def declare_claim_lock(channel: aiormq.abc.AbstractChannel, shard_queue: str) -> None:
    """Take the shard's claim lock on ``channel``; the caller deletes it
    (`release_claim_lock`). Raises aiormq's ChannelLockedResource, and the broker
    closes the channel, while another connection holds it: a bare channel
    (`nodes.bare_channel`) then stays closed, where a robust one would open
    itself again and stay open for the connection's life."""
    await channel.queue_declare(
        claim_lock(shard_queue), exclusive=True, arguments={"x-queue-type": "classic"}
    )


async def release_claim_lock(channel: aiormq.abc.AbstractChannel, shard_queue: str) -> None:
    """Let go of the shard's claim lock taken on ``channel``."""
    await channel.queue_delete(claim_lock(shard_queue))


class TopologyError(Exception):
    """The broker cannot hold the topology as the worker needs it; the message says why."""


_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
_DEAD_LETTERING: dict[str, Any] = {
    "x-dead-letter-exchange": "",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True)
class Topology:
    update_queue: str
    result_queue: str
    dead_letter_queue: str
    retry_delays_s: tuple[int, ...] = (5, 30, 120, 600)
    delivery_limit: int = DELIVERY_LIMIT
    shards: int = 0
    # Portals with a queue of their own (empty: none); not together with shards.
    portals: tuple[str, ...] = ()
    # Portal queues even with no portal yet: portals come and go at run time.
    by_portal: bool = False
    # Second names of portals (their member_id) and the key each stands for: a
    # command naming either reaches the same queue.
    aliases: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.shards and self.portal_queues:
            raise ValueError("portal queues and shards exclude each other")

    @property
    def portal_queues(self) -> bool:
        """Each portal has a queue of its own behind the headers exchange UPDATE_QUEUE."""
        return self.by_portal or bool(self.portals)

    @property
    def poison_queue(self) -> str:
        return wire.poison_queue(self.update_queue)

    @property
    def retry_queue(self) -> str:
        return wire.retry_queue(self.update_queue)

    @property
    def entry_exchange(self) -> str | None:
        """The exchange producers publish to; None when they publish to UPDATE_QUEUE itself."""
        return self.update_queue if self.shards or self.portal_queues else None

    @property
    def unrouted_exchange(self) -> str:
        return wire.unrouted_exchange(self.update_queue)

    def shard_queue(self, index: int) -> str:
        return wire.shard_queue(self.update_queue, index)

    def portal_queue(self, portal: str) -> str:
        return wire.portal_queue(self.update_queue, portal)

    def aliases_of(self, portal: str) -> tuple[str, ...]:
        return tuple(alias for alias, key in self.aliases if key == portal)

    @property
    def work_queues(self) -> tuple[str, ...]:
        """The queues commands wait in: the shards, or UPDATE_QUEUE (and the portals')."""
        if self.shards:
            return tuple(self.shard_queue(index) for index in range(self.shards))
        return (self.update_queue, *(self.portal_queue(key) for key in self.portals))

    def tier_queue(self, delay_s: int) -> str:
        return wire.tier_queue(self.update_queue, delay_s)

    def tier_for(self, attempt: int) -> int:
        """The delay before try `attempt + 1`, after `attempt` tries failed."""
        return self.retry_delays_s[min(attempt, len(self.retry_delays_s)) - 1]

    def _work_arguments(self) -> dict[str, Any]:
        return {
            **_QUORUM,
            **_DEAD_LETTERING,
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-routing-key": self.poison_queue,
        }

    def portal_queue_arguments(self) -> dict[str, Any]:
        """A portal queue's arguments: a work queue with one active consumer."""
        return {**self._work_arguments(), "x-single-active-consumer": True}

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue with its arguments."""
        quorum, dead_lettering, work = _QUORUM, _DEAD_LETTERING, self._work_arguments()
        queues: dict[str, dict[str, Any]] = {name: dict(work) for name in self.work_queues}
        if self.shards or self.portal_queues:
            for name in self.work_queues:
                if name != self.update_queue:
                    queues[name]["x-single-active-consumer"] = True
        queues[self.poison_queue] = dict(quorum)
        queues[self.retry_queue] = {
            **quorum,
            **dead_lettering,
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-routing-key": self.poison_queue,
        }
        queues[self.result_queue] = dict(quorum)
        queues[self.dead_letter_queue] = dict(quorum)
        for delay in self.retry_delays_s:
            queues[self.tier_queue(delay)] = {
                **quorum,
                **dead_lettering,
                "x-message-ttl": delay * 1000,
                "x-dead-letter-routing-key": self.retry_queue,
            }
        return queues


async def declare(connection: AbstractConnection, topology: Topology) -> dict[str, int]:
    """Declare the exchanges (with shards or portal queues) and every queue, then bind;
    returns each queue's ready messages as the broker reported them.

    Raises TopologyError naming what differs: a queue or an exchange with other
    arguments, the consistent-hash exchange missing from the broker, or shard or
    portal queues left from another configuration.
    """
    exchange = topology.entry_exchange
    if exchange is not None:
        await declare_exchange(connection, topology)
    queues = list(topology.queues().items())
    ready: dict[str, int] = {}
    # Side by side on a few channels: a deployment may have a thousand portal queues.
    await _all(
        _declare_queues(connection, queues[start::_DECLARING_CHANNELS], ready)
        for start in range(min(_DECLARING_CHANNELS, len(queues)))
    )
    if topology.shards:
        async with bare_channel(connection) as underlay:
            for name in topology.work_queues:
                await underlay.queue_bind(name, topology.update_queue, routing_key=_SHARD_WEIGHT)
    if topology.portal_queues:
        async with bare_channel(connection) as underlay:
            await underlay.queue_bind(topology.update_queue, topology.unrouted_exchange)
        keys = list(topology.portals)
        await _all(
            _bind_portals(connection, topology, keys[start::_DECLARING_CHANNELS])
            for start in range(min(_DECLARING_CHANNELS, len(keys)))
        )
    await refuse_leftover_shard(connection, topology)
    await refuse_leftover_portals(connection, topology)
    return ready


async def declare_portal(
    connection: AbstractConnection, topology: Topology, key: str, aliases: Iterable[str] = ()
) -> int:
    """Declare one portal's queue and bind it, under its key and ``aliases`` (a portal
    registered at run time); returns its ready messages."""
    name = topology.portal_queue(key)
    ready: dict[str, int] = {}
    await _declare_queues(connection, [(name, topology.portal_queue_arguments())], ready)
    await _bind_portals(connection, topology, [key], aliases={key: tuple(aliases)})
    return ready[name]


async def _all(steps: Iterable[Awaitable[None]]) -> None:
    """Run the steps side by side; once every one has ended, raise the first error."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _declare_queues(
    connection: AbstractConnection, queues: list[tuple[str, dict[str, Any]]], ready: dict[str, int]
) -> None:
    # A declare the broker refuses closes its channel: a bare one stays closed (a portal
    # registered at run time is declared again at every look until it can be).
    async with bare_channel(connection) as channel:
        for name, arguments in queues:
            try:
                declared = await channel.queue_declare(name, durable=True, arguments=arguments)
                ready[name] = int(declared.message_count or 0)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                raise TopologyError(
                    f"queue {name!r} already exists with other arguments than this worker "
                    f"needs ({_reason(exc)}); the worker needs {arguments}. Move its messages "
                    "away and delete it, or point the worker at other queue names"
                ) from None


async def _bind_portals(
    connection: AbstractConnection,
    topology: Topology,
    keys: list[str],
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Each portal queue on its x-b24-portal header: its key, and each of its aliases."""
    async with bare_channel(connection) as underlay:
        for key in keys:
            names = aliases[key] if aliases is not None else topology.aliases_of(key)
            for name in (key, *names):
                await underlay.queue_bind(
                    topology.portal_queue(key),
                    topology.update_queue,
                    # "all" would ignore headers named x-...: every binding would match.
                    arguments={"x-match": "all-with-x", wire.PORTAL_HEADER: name},
                )


async def declare_exchange(connection: AbstractConnection, topology: Topology) -> None:
    """Declare the consistent-hash exchange (SHARDS > 0), or the portal queues' headers
    exchange and its alternate; TopologyError when the broker lacks the exchange
    type (it has closed `connection` then) or an exchange of that name differs."""
    name, shards = topology.update_queue, topology.shards
    if topology.portal_queues:
        await _declare_portal_exchanges(connection, topology)
        return
    try:
        async with bare_channel(connection) as channel:
            await channel.exchange_declare(name, exchange_type=HASH_EXCHANGE_TYPE, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyError(
            f"exchange {name!r} already exists with other arguments than this worker needs "
            f"({_reason(exc)}); with SHARDS={shards} it must be a durable {HASH_EXCHANGE_TYPE} "
            "exchange. Delete it, or point the worker at another UPDATE_QUEUE"
        ) from None
    except aiormq.exceptions.ConnectionCommandInvalid as exc:
        # An unknown exchange type is a connection-level error: the broker has
        # closed the whole connection by now, not just the channel.
        if "exchange type" not in str(exc):
            raise
        raise TopologyError(
            f"the broker has no {HASH_EXCHANGE_TYPE} exchange type, which SHARDS={shards} "
            f"needs: enable the {HASH_PLUGIN} plugin on every broker node with "
            f"`rabbitmq-plugins enable {HASH_PLUGIN}` (no restart needed), or set SHARDS=0"
        ) from None


async def _declare_portal_exchanges(connection: AbstractConnection, topology: Topology) -> None:
    name, unrouted = topology.update_queue, topology.unrouted_exchange
    try:
        async with bare_channel(connection) as channel:
            await channel.exchange_declare(unrouted, exchange_type="fanout", durable=True)
            await channel.exchange_declare(
                name,
                exchange_type=PORTAL_EXCHANGE_TYPE,
                durable=True,
                arguments={"alternate-exchange": unrouted},
            )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyError(
            f"exchange {name!r} or {unrouted!r} already exists with other arguments than this "
            f"worker needs ({_reason(exc)}); with portal queues {name!r} must be a durable "
            f"{PORTAL_EXCHANGE_TYPE} exchange whose alternate exchange is {unrouted!r}, a "
            "durable fanout exchange. Workers with SHARDS > 0 may have made it: delete it "
            "once their shard queues are empty, or point the worker at another UPDATE_QUEUE"
        ) from None


async def refuse_leftover_portals(connection: AbstractConnection, topology: Topology) -> None:
    """TopologyError when workers with portal queues declared the exchanges and these
    workers have none: the headers exchange would still send each portal's commands
    to a queue no worker of this configuration consumes."""
    if topology.portal_queues:
        return
    unrouted = topology.unrouted_exchange
    if not await exists(connection, unrouted, exchange=True):
        return
    raise TopologyError(
        f"exchange {unrouted!r} exists: workers serving several portals declared portal "
        f"queues ({topology.portal_queue('<key>')!r}), and producers publish to the exchange "
        f"{topology.update_queue!r}, which sends each portal's commands there; these workers "
        "(one portal, SHARDS > 0, or PORTAL_QUEUES=false) would not consume them. Stop the "
        "producers, let the workers that made them empty the portal queues, delete those "
        f"queues and the exchanges {topology.update_queue!r} and {unrouted!r}, then start "
        "again; or keep the configuration they were made for"
    )


async def refuse_leftover_shard(connection: AbstractConnection, topology: Topology) -> None:
    """TopologyError when a shard queue past the last one exists: workers with a
    larger SHARDS made it, it is still bound to the exchange, and no worker of
    this SHARDS consumes it."""
    extra = topology.shard_queue(topology.shards)
    if not await exists(connection, extra, exchange=False):
        return
    name, shards = topology.update_queue, topology.shards
    if shards:
        routed = f"the exchange {name!r} still sends some items' commands to it"
        remove = f"delete the shard queues from {extra!r} up"
    else:
        routed = f"commands published to the exchange {name!r} wait there"
        remove = "delete the shard queues and the exchange"
    raise TopologyError(
        f"queue {extra!r} exists: workers with more than SHARDS={shards} declared it, and "
        f"{routed}, but these workers would not consume it. To run with SHARDS={shards}: "
        f"stop the producers, let the workers that made it empty every shard queue, {remove}, "
        "then start again; or keep the SHARDS it was made for"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc)
    start = text.find("inequivalent arg")
    return text[start : text.find("'", text.find("'", start) + 1) + 1] if start >= 0 else "406"
