"""Whether the worker should be given work now: what /readyz answers.

`Readiness` looks at what the worker has built (the broker connection, each
portal's lane, the consumers) as the worker fills them in, and gives the first
reason it is not ready, or None.
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
        """Why not ready (not connected, a portal down, the limiter away, not consuming)."""
        if self.connection is None or self.connection.is_closed:
            return "not connected to the broker"
        down = [
            f"{lane.pipeline.down} ({key})"
            for key, lane in self._lanes.items()
            if lane.pipeline.down is not None
        ]
        if down:
            return "portal down: " + ", ".join(down)
        away = [
            key for key, lane in self._lanes.items() if lane.limiter and not lane.limiter.reachable
        ]
        if away:
            return "limiter unreachable: " + ", ".join(away)
        if self.consumers is None or not self.consumers.consuming:
            return "not consuming"
        return None
