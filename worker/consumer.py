"""Deliveries in: the work queue, the queue of returning retry copies, and the
queue of messages the broker dead-lettered. Each on a channel of its own with a
bounded prefetch, handing every delivery to the pipeline.

Consumers are registered on the broker client's underlying channels, so a
delivery reaches the pipeline as a light `Delivery` read from its frames. The
robust connection reopens the channels (and their prefetch) after a
connection loss, but knows nothing of these consumers: the watcher consumes
again on the new channel, as it does when the server cancels a consumer (its
queue was deleted and declared again, for example).

Consumption can be paused (a portal-wide state) and resumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from worker.acks import Acks
from worker.jobs import Delivery
from worker.topology import Topology

__all__ = ["Consumers"]

log = structlog.get_logger("worker.consumer")

Source = Literal["update", "retry", "poison"]


class Consumers:
    def __init__(
        self,
        *,
        connection: AbstractConnection,
        topology: Topology,
        prefetch: int,
        handle: Callable[[Delivery, Source], Awaitable[None]],
        acks: Acks | None = None,
    ) -> None:
        self._connection = connection
        self._acks = acks
        self._prefetch = prefetch
        self._handle = handle
        self._names: dict[Source, str] = {
            "update": topology.update_queue,
            "retry": topology.retry_queue,
            "poison": topology.poison_queue,
        }
        self._channels: dict[Source, AbstractChannel] = {}
        # What each consumer was registered on: its tag, and the channel of that moment.
        self._consuming: dict[Source, tuple[str, aiormq.abc.AbstractChannel]] = {}
        self._lock = asyncio.Lock()
        self.consuming = False

    async def open(self) -> None:
        for source, name in self._names.items():
            channel = await self._connection.channel(publisher_confirms=False)
            prefetch = self._prefetch if source == "update" else max(10, self._prefetch // 4)
            await channel.set_qos(prefetch_count=prefetch)
            await channel.get_queue(name, ensure=True)  # a missing queue fails here, clearly
            self._channels[source] = channel

    async def start(self) -> None:
        async with self._lock:
            for source in self._names:
                await self._consume(source)
        self.consuming = True
        log.info("consumer.started", queues=list(self._names.values()))

    async def pause(self, *, keep: tuple[Source, ...] = ("poison",)) -> None:
        """Stop taking deliveries (except from `keep`); what is held stays held."""
        async with self._lock:
            for source in list(self._consuming):
                if source not in keep:
                    await self._cancel(source)
        self.consuming = False
        log.info("consumer.paused")

    async def resume(self) -> None:
        async with self._lock:
            for source in self._names:
                if source not in self._consuming:
                    await self._consume(source)
        self.consuming = True
        log.info("consumer.resumed")

    async def stop(self) -> None:
        await self.pause(keep=())

    async def close(self) -> None:
        for channel in self._channels.values():
            if not channel.is_closed:
                await channel.close()

    async def _consume(self, source: Source) -> None:
        channel = await self._channels[source].get_underlay_channel()
        handle, acks = self._handle, self._acks

        async def on_message(raw: DeliveredMessage) -> None:
            delivery = Delivery(raw)
            try:
                await handle(delivery, source)
            except Exception:
                # A bug, not an outcome: give the message back, so the broker
                # counts its deliveries and dead-letters one that keeps failing.
                log.exception("consumer.handler_crashed", message_id=delivery.message_id)
                try:
                    await delivery.nack(requeue=True)
                except Exception as exc:  # the channel went: the broker redelivers anyway
                    log.warning("consumer.nack_failed", error=type(exc).__name__)
                    return
                if acks is not None and delivery.delivery_tag is not None:
                    acks.settled_elsewhere(delivery.channel, delivery.delivery_tag)

        ok = await channel.basic_consume(self._names[source], on_message, no_ack=False)
        if ok.consumer_tag is None:  # pragma: no cover - the broker always names it
            raise aiormq.exceptions.AMQPError("the broker gave the consumer no tag")
        self._consuming[source] = (ok.consumer_tag, channel)

    async def _cancel(self, source: Source) -> None:
        tag, channel = self._consuming.pop(source)
        if not channel.is_closed:
            try:
                await channel.basic_cancel(tag)
            except aiormq.exceptions.AMQPError as exc:  # the channel went meanwhile
                log.warning("consumer.cancel_failed", source=source, error=type(exc).__name__)

    async def watch_cancellations(self, interval_s: float = 1.0) -> None:
        """Consume again on a channel that was reopened, or whose consumer the server cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            async with self._lock:
                for source, (tag, channel) in list(self._consuming.items()):
                    if not channel.is_closed and tag in _consumer_tags(channel):
                        continue
                    try:
                        current = await asyncio.wait_for(
                            self._channels[source].get_underlay_channel(), interval_s
                        )
                    except Exception:  # noqa: S112 - still reconnecting: look again next time
                        continue
                    if current.is_closed:
                        continue
                    reason = "channel_reopened" if current is not channel else "cancelled_by_server"
                    log.warning("consumer.lost", queue=self._names[source], reason=reason)
                    try:
                        await self._consume(source)
                    except Exception as exc:  # the queue may be gone for good
                        log.error(
                            "consumer.reconsume_failed",
                            queue=self._names[source],
                            error=type(exc).__name__,
                        )


def _consumer_tags(channel: aiormq.abc.AbstractChannel) -> set[str]:
    """The consumers a channel still has; a server-side cancel removes its tag."""
    consumers: dict[str, object] = getattr(channel, "consumers", {})
    return set(consumers)
