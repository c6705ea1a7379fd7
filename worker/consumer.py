"""Deliveries in: the work queue, the queue of returning retry copies, and the
queue of messages the broker dead-lettered. Each on a channel of its own with a
bounded prefetch, handing every delivery to the pipeline.

Consumption can be paused (a portal-wide state) and resumed. When the server
cancels a consumer (its queue was deleted and declared again, for example), the
worker consumes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

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
        handle: Callable[[AbstractIncomingMessage, Source], Awaitable[None]],
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._prefetch = prefetch
        self._handle = handle
        self._queues: dict[Source, AbstractQueue] = {}
        self._tags: dict[Source, str] = {}
        self._channels: list[AbstractChannel] = []
        self.consuming = False

    async def open(self) -> None:
        names: dict[Source, str] = {
            "update": self._topology.update_queue,
            "retry": self._topology.retry_queue,
            "poison": self._topology.poison_queue,
        }
        for source, name in names.items():
            channel = await self._connection.channel(publisher_confirms=False)
            prefetch = self._prefetch if source == "update" else max(10, self._prefetch // 4)
            await channel.set_qos(prefetch_count=prefetch)
            self._channels.append(channel)
            self._queues[source] = await channel.get_queue(name, ensure=True)

    async def start(self) -> None:
        for source, queue in self._queues.items():
            self._tags[source] = await queue.consume(self._callback(source))
        self.consuming = True
        log.info("consumer.started", queues=[q.name for q in self._queues.values()])

    async def pause(self, *, keep: tuple[Source, ...] = ("poison",)) -> None:
        """Stop taking deliveries (except from `keep`); what is held stays held."""
        for source, tag in list(self._tags.items()):
            if source in keep:
                continue
            await self._queues[source].cancel(tag)
            del self._tags[source]
        self.consuming = False
        log.info("consumer.paused")

    async def resume(self) -> None:
        for source, queue in self._queues.items():
            if source not in self._tags:
                self._tags[source] = await queue.consume(self._callback(source))
        self.consuming = True
        log.info("consumer.resumed")

    async def stop(self) -> None:
        await self.pause(keep=())

    async def close(self) -> None:
        for channel in self._channels:
            if not channel.is_closed:
                await channel.close()

    def _callback(self, source: Source) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(message, source)

        return on_message

    async def watch_cancellations(self, interval_s: float = 1.0) -> None:
        """Consume again when the server cancelled a consumer."""
        while True:
            await asyncio.sleep(interval_s)
            if not self.consuming:
                continue
            for source, queue in self._queues.items():
                tag = self._tags.get(source)
                if tag is not None and tag not in await _live_consumers(queue):
                    log.warning("consumer.cancelled_by_server", queue=queue.name)
                    try:
                        self._tags[source] = await queue.consume(self._callback(source))
                    except Exception as exc:  # the queue may be gone for good
                        log.error(
                            "consumer.reconsume_failed", queue=queue.name, error=type(exc).__name__
                        )


async def _live_consumers(queue: AbstractQueue) -> set[str]:
    """Consumer tags the channel still has; a server-side cancel removes its tag."""
    try:
        underlay = await queue.channel.get_underlay_channel()
    except Exception:  # the channel is being restored after a reconnect
        return set()
    consumers: dict[str, object] = getattr(underlay, "consumers", {})
    return set(consumers)
