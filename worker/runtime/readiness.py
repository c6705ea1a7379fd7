"""Whether the worker should be given work now: what /readyz answers.

`Readiness` looks at what the worker has built (the broker connection, each
portal's lane, the consumers) as the worker fills them in, and gives the first
reason it is not ready, or None. It is about the worker, not about one of its
portals: a portal that is down holds back its own commands (and says so in its
`b24_portal_up` series and its log lines), while the worker goes on with the
others, so taking the worker out of rotation would help no one.
"""

from __future__ import annotations

from collections.abc import Mapping

from aio_pika.abc import AbstractRobustConnection

from worker.amqp.consumer import Consumers
from worker.runtime.lanes import Lane

__all__ = ["Readiness"]


class Readiness:
    def __init__(self, lanes: Mapping[str, Lane]) -> None:
        self._lanes = lanes
        self.connection: AbstractRobustConnection | None = None
        self.consumers: Consumers | None = None

    def reason(self) -> str | None:
        """Why not ready (not connected, the limiter away, not consuming)."""
        if self.connection is None or self.connection.is_closed:
            return "not connected to the broker"
        if self.consumers is not None and not self.consumers.connected:
            return "a connection of the portal queues is down"
        away = [
            key for key, lane in self._lanes.items() if lane.limiter and not lane.limiter.reachable
        ]
        if away:
            return "limiter unreachable: " + ", ".join(away)
        if self.consumers is None or not self.consumers.consuming:
            return "not consuming"
        return None
