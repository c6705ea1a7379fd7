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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

__all__ = ["DELIVERY_LIMIT", "Topology", "TopologyError", "declare"]

# High enough that restarts and hand-backs never dead-letter a healthy message;
# low enough that a message crashing the worker stops looping.
DELIVERY_LIMIT = 50


class TopologyError(Exception):
    """A queue exists with other arguments than the worker needs."""


@dataclass(frozen=True)
class Topology:
    update_queue: str
    result_queue: str
    dead_letter_queue: str
    retry_delays_s: tuple[int, ...] = (5, 30, 120, 600)
    delivery_limit: int = DELIVERY_LIMIT
    shards: int = 0

    @property
    def poison_queue(self) -> str:
        return f"{self.update_queue}.poison"

    @property
    def retry_queue(self) -> str:
        return f"{self.update_queue}.retry"

    def tier_queue(self, delay_s: int) -> str:
        return f"{self.update_queue}.retry.{delay_s}s"

    def tier_for(self, attempt: int) -> int:
        """The delay before try `attempt + 1`, after `attempt` tries failed."""
        return self.retry_delays_s[min(attempt, len(self.retry_delays_s)) - 1]

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue with its arguments."""
        quorum: dict[str, Any] = {"x-queue-type": "quorum"}
        dead_lettering: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        queues: dict[str, dict[str, Any]] = {
            self.update_queue: {
                **quorum,
                **dead_lettering,
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-routing-key": self.poison_queue,
            },
            self.poison_queue: dict(quorum),
            self.retry_queue: {
                **quorum,
                **dead_lettering,
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-routing-key": self.poison_queue,
            },
            self.result_queue: dict(quorum),
            self.dead_letter_queue: dict(quorum),
        }
        for delay in self.retry_delays_s:
            queues[self.tier_queue(delay)] = {
                **quorum,
                **dead_lettering,
                "x-message-ttl": delay * 1000,
                "x-dead-letter-routing-key": self.retry_queue,
            }
        return queues


async def declare(connection: AbstractConnection, topology: Topology) -> None:
    """Declare every queue; raise TopologyError naming a queue whose arguments differ."""
    for name, arguments in topology.queues().items():
        channel: AbstractChannel = await connection.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyError(
                f"queue {name!r} already exists with other arguments than this worker needs "
                f"({_reason(exc)}); the worker needs {arguments}. Move its messages away and "
                "delete it, or point the worker at other queue names"
            ) from None
        finally:
            if not channel.is_closed:
                await channel.close()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    start = text.find("inequivalent arg")
    return text[start : text.find("'", text.find("'", start) + 1) + 1] if start >= 0 else "406"
