"""Operators' and producers' tools behind `b24-worker publish`, `dlq` and `check`.

Modules: ``broker`` (connecting, the entry point - UPDATE_QUEUE or, with shards, the
exchange of that name -, confirmed publishes, the error root ``ToolError``),
``sources`` (commands read from JSON Lines or CSV), ``publish`` (the publish run),
``replies`` (outcome events on a reply queue), ``progress`` (the stderr counter),
``letters`` (reading the dead-letter queue in place), ``dlq`` (show and replay),
``check`` (can the worker start here).
"""

from worker.tools.broker import BrokerUnavailableError, PublishRefusedError, ToolError
from worker.tools.replies import Event, Replies, parse_event

__all__ = [
    "BrokerUnavailableError",
    "Event",
    "PublishRefusedError",
    "Replies",
    "ToolError",
    "parse_event",
]
