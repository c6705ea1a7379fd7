"""What travels on the broker besides the bodies: headers, routing keys, queue names.

Producers, the tools and the worker all read these from here, so a header
name or a naming rule is written once. Pure values and functions, no I/O.

    headers a producer may set      PORTAL_HEADER, JOB_HEADER
    headers the worker sets         ATTEMPTS_HEADER, ASSIGNED_ID_HEADER (retry copies)
    headers the broker sets         DELIVERY_COUNT_HEADER (quorum queues), DEATH_HEADER
    routing key of a command        item_routing_key (the entry exchange, with SHARDS > 0)
    queue names                     derived from UPDATE_QUEUE: shard_queue, portal_queue,
                                    poison_queue, retry_queue, tier_queue
    exchange names                  UPDATE_QUEUE itself (SHARDS > 0, or portal queues),
                                    unrouted_exchange
"""

from __future__ import annotations

import re

__all__ = [
    "ASSIGNED_ID_HEADER",
    "ATTEMPTS_HEADER",
    "DEATH_HEADER",
    "DEFAULT_DEAD_LETTER_QUEUE",
    "DEFAULT_RESULT_QUEUE",
    "DEFAULT_UPDATE_QUEUE",
    "DELIVERY_COUNT_HEADER",
    "JOB_HEADER",
    "JOB_ID_PATTERN",
    "JOB_ID_RULE",
    "JSON_CONTENT_TYPES",
    "PORTAL_HEADER",
    "PORTAL_KEY_PATTERN",
    "WORKER_HEADERS",
    "is_job_id",
    "is_portal_key",
    "item_routing_key",
    "poison_queue",
    "portal_queue",
    "retry_queue",
    "shard_queue",
    "tier_queue",
    "unrouted_exchange",
]

# The portal a command is for: a key of the worker's configuration. Credentials
# never travel in a message.
PORTAL_HEADER = "x-b24-portal"
# What a portal key may be: it names a portal in headers, routing keys and logs.
PORTAL_KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"

# The bulk job a command belongs to: the worker counts its outcomes under this id
# (`b24-worker jobs`). Optional; a command without it belongs to no job.
JOB_HEADER = "x-b24-job"
# What a job id may be: it names the job on the command line and in the job store.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
JOB_ID_RULE = "a job id is 1-128 letters, digits and '_.:-', starting with a letter or digit"

# Set on retry copies: how many calls to the portal the command has had so far.
ATTEMPTS_HEADER = "x-b24-attempts"
# Set on retry copies: the message id the worker assigned when the producer gave none.
ASSIGNED_ID_HEADER = "x-b24-message-id"
# Set by RabbitMQ on a quorum queue's redeliveries: how often it was delivered.
DELIVERY_COUNT_HEADER = "x-delivery-count"
# Set by RabbitMQ when it dead-letters a message (a delay tier's TTL, the delivery limit).
DEATH_HEADER = "x-death"
# Headers that belong to one trip through the worker, not to the producer's command:
# a replayed command leaves them behind.
WORKER_HEADERS = frozenset(
    {ATTEMPTS_HEADER, ASSIGNED_ID_HEADER, DEATH_HEADER, DELIVERY_COUNT_HEADER}
)

# A command's content type: JSON, or none given.
JSON_CONTENT_TYPES = frozenset({"", "application/json", "text/json"})

DEFAULT_UPDATE_QUEUE = "crm.item.update"
DEFAULT_RESULT_QUEUE = "crm.item.update.result"
DEFAULT_DEAD_LETTER_QUEUE = "crm.item.update.dead"

_PORTAL_KEY = re.compile(PORTAL_KEY_PATTERN)
_JOB_ID = re.compile(JOB_ID_PATTERN)


def is_portal_key(value: str) -> bool:
    """True when ``value`` may name a portal."""
    return _PORTAL_KEY.match(value) is not None


def is_job_id(value: str) -> bool:
    """True when ``value`` may name a bulk job."""
    return _JOB_ID.match(value) is not None


def item_routing_key(portal: str | None, entity_type_id: int, item_id: int) -> str:
    """The routing key of every command for one item: `2:351`, or `acme:2:351` with a portal.

    Producers that name the portal (the x-b24-portal header) must name it on every
    command of the item: a command without it hashes to another key.
    """
    item = f"{entity_type_id}:{item_id}"
    return f"{portal}:{item}" if portal else item


def shard_queue(update_queue: str, index: int) -> str:
    """Shard ``index`` behind the exchange UPDATE_QUEUE (SHARDS > 0)."""
    return f"{update_queue}.shard.{index}"


def portal_queue(update_queue: str, portal: str) -> str:
    """The queue of one portal's commands, behind the headers exchange UPDATE_QUEUE."""
    return f"{update_queue}.portal.{portal}"


def unrouted_exchange(update_queue: str) -> str:
    """Where the headers exchange UPDATE_QUEUE sends a command no portal queue takes
    (no x-b24-portal header, or a portal without a queue): on to the queue UPDATE_QUEUE."""
    return f"{update_queue}.unrouted"


def poison_queue(update_queue: str) -> str:
    """Where the broker dead-letters a command delivered too often without being settled."""
    return f"{update_queue}.poison"


def retry_queue(update_queue: str) -> str:
    """Where retry copies come back from their delay tier."""
    return f"{update_queue}.retry"


def tier_queue(update_queue: str, delay_s: int) -> str:
    """The delay tier of ``delay_s`` seconds."""
    return f"{update_queue}.retry.{delay_s}s"
