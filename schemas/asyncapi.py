"""The worker's queues and messages as an AsyncAPI 3.0 document, built from the models.

`b24-worker schema --asyncapi` prints it; docs/contract/asyncapi.json is that
output, and a test keeps the two equal, so the document cannot drift from the
models the worker validates with.
"""

from __future__ import annotations

from typing import Any

from schemas.command import command_json_schema
from schemas.events import CONTRACT_VERSION, FailureEvent, SuccessEvent
from schemas.wire import (
    DEFAULT_DEAD_LETTER_QUEUE,
    DEFAULT_RESULT_QUEUE,
    DEFAULT_UPDATE_QUEUE,
    JOB_HEADER,
    JOB_ID_PATTERN,
    PORTAL_HEADER,
    PORTAL_KEY_PATTERN,
)

__all__ = ["EVOLUTION_RULE", "asyncapi_document"]

# How the contract changes: README's "How the contract evolves" is this text, and a
# test keeps the two equal.
EVOLUTION_RULE = """\
Every event carries `contractVersion` (1 today); the AsyncAPI document's `info.version`
starts with it. Within one contractVersion a consumer may rely on this:

- Every field documented today keeps its name, its type and its meaning, and
  `status` is `succeeded` or `failed`.
- A command is the parameters of `crm.item.update` and nothing else; the
  `x-b24-portal` header and the routing key `[<portal>:]<entityTypeId>:<id>`
  keep their meaning. The worker may learn to refuse more values that the
  portal would silently mangle: each such refusal is a `validation` failure
  with its reason, not a change of the contract.

These may appear within a contractVersion, and consumers must accept them:

- New optional fields in events (ignore the ones you do not know).
- New values of `error.class` (it is open: treat a class you do not know as a
  failure to look at, retryable only if `error.retryable` says so) and new
  `error.code`s.
- New optional headers on commands and events, and new queues.

A new contractVersion comes with removing or renaming a field, changing a
field's type or meaning, a new required field, a new `status`, or a change of
the command body or of the routing key."""

_AMQP_BINDING = "0.3.0"


def _components(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each JSON Schema's $defs hoisted into components/schemas, its refs rewritten."""
    hoisted: dict[str, Any] = {}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: (
                    "#/components/schemas/" + item.removeprefix("#/$defs/")
                    if key == "$ref" and isinstance(item, str)
                    else rewrite(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        return value

    for name, schema in schemas.items():
        body = dict(schema)
        for def_name, definition in body.pop("$defs", {}).items():
            definition = rewrite(definition)
            if hoisted.setdefault(def_name, definition) != definition:
                raise ValueError(f"two schemas define {def_name} differently")
        body.pop("$schema", None)
        body.pop("$id", None)
        hoisted[name] = rewrite(body)
    return hoisted


def _queue_channel(address: str, description: str, messages: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": address,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                },
                "bindingVersion": _AMQP_BINDING,
            }
        },
    }


def _message(name: str, title: str, summary: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "correlationId": {"location": "$message.header#/correlation_id"},
        "payload": {"$ref": f"#/components/schemas/{name}"},
        "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": _AMQP_BINDING}},
    }


def _command_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            PORTAL_HEADER: {
                "type": "string",
                "pattern": PORTAL_KEY_PATTERN,
                "description": (
                    "The portal the command is for: a key of the worker's configuration "
                    "(B24_PORTALS, or B24_PORTAL_KEY); without it, B24_DEFAULT_PORTAL. An "
                    "unknown key ends the command as a validation failure. Credentials "
                    "never travel in a message."
                ),
            },
            JOB_HEADER: {
                "type": "string",
                "pattern": JOB_ID_PATTERN,
                "description": (
                    "The bulk job the command belongs to (optional): the worker counts its "
                    "outcome under this id (`b24-worker jobs show`), names it in the event's "
                    "`job`, and ends it as `aborted`, unsent, once the job is aborted."
                ),
            },
        },
    }


def asyncapi_document() -> dict[str, Any]:
    update, result, dead = DEFAULT_UPDATE_QUEUE, DEFAULT_RESULT_QUEUE, DEFAULT_DEAD_LETTER_QUEUE
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "b24-update-worker",
            # The minor part counts what was added under the evolution rule (1: the
            # events' optional `portal`, and the portal queues' exchange).
            "version": f"{CONTRACT_VERSION}.1.0",
            "description": (
                "Bitrix24 crm.item.update commands applied from a RabbitMQ queue. Producers "
                "publish commands to the work queue (the default exchange, routing key = the "
                "queue's name); the worker reports one terminal outcome per command: a success "
                "event to reply_to or the result queue, a failure event to the dead-letter "
                "queue (and a copy to reply_to). Queue names are the defaults of UPDATE_QUEUE, "
                "RESULT_QUEUE and DEAD_LETTER_QUEUE.\n\n"
                "How the contract evolves:\n\n" + EVOLUTION_RULE
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "the broker at AMQP_URL",
            }
        },
        "channels": {
            "updates": _queue_channel(
                update,
                "Commands to apply (a quorum queue), when SHARDS is 0. message_id names the "
                "command in its events; correlation_id is copied to them; reply_to receives "
                "the outcome.",
                ["UpdateCommand"],
            ),
            "shardedUpdates": {
                "address": update,
                "description": (
                    "With SHARDS > 0 the entry point is an exchange of this name, of type "
                    "x-consistent-hash (the rabbitmq_consistent_hash_exchange plugin), in "
                    "front of the quorum queues <UPDATE_QUEUE>.shard.<i>, each with a single "
                    "active consumer. The routing key is the item: '<entityTypeId>:<id>', or "
                    "'<portal>:<entityTypeId>:<id>' with the x-b24-portal header; every "
                    "command of an item must use the same key, so that one shard, and one "
                    "replica at a time, holds them in order."
                ),
                "messages": {"UpdateCommand": {"$ref": "#/components/messages/UpdateCommand"}},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": update, "durable": True, "autoDelete": False},
                        "bindingVersion": _AMQP_BINDING,
                    }
                },
            },
            "portalUpdates": {
                "address": update,
                "description": (
                    "With several portals configured (and SHARDS 0), the entry point is also "
                    "an exchange of this name, of type headers, in front of one quorum queue "
                    "per portal, <UPDATE_QUEUE>.portal.<key>, each with a single active "
                    "consumer: the x-b24-portal header picks the queue. A command without "
                    "the header, or for a portal the worker does not serve, goes through the "
                    "alternate exchange <UPDATE_QUEUE>.unrouted to the queue of this name. "
                    "Publishing straight to that queue still works, without the portals' "
                    "separate queues."
                ),
                "messages": {"UpdateCommand": {"$ref": "#/components/messages/UpdateCommand"}},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": update,
                            "type": "headers",
                            "durable": True,
                            "autoDelete": False,
                        },
                        "bindingVersion": _AMQP_BINDING,
                    }
                },
            },
            "results": _queue_channel(
                result, "Success events of commands without reply_to.", ["SuccessEvent"]
            ),
            "deadLetters": _queue_channel(
                dead, "Failure events, with the original command and properties.", ["FailureEvent"]
            ),
            "replies": {
                "address": None,
                "description": "The queue a command names in reply_to.",
                "messages": {
                    "SuccessEvent": {"$ref": "#/components/messages/SuccessEvent"},
                    "FailureEvent": {"$ref": "#/components/messages/FailureEvent"},
                },
            },
        },
        "operations": {
            "applyUpdate": {
                "action": "receive",
                "summary": "The worker takes a command, applies it and reports its outcome.",
                "channel": {"$ref": "#/channels/updates"},
                "messages": [{"$ref": "#/channels/updates/messages/UpdateCommand"}],
                "reply": {
                    "address": {"location": "$message.header#/reply_to"},
                    "channel": {"$ref": "#/channels/replies"},
                },
            },
            "applyShardedUpdate": {
                "action": "receive",
                "summary": "The same, with SHARDS > 0: commands come through the exchange.",
                "channel": {"$ref": "#/channels/shardedUpdates"},
                "messages": [{"$ref": "#/channels/shardedUpdates/messages/UpdateCommand"}],
                "reply": {
                    "address": {"location": "$message.header#/reply_to"},
                    "channel": {"$ref": "#/channels/replies"},
                },
            },
            "applyPortalUpdate": {
                "action": "receive",
                "summary": "The same, with several portals: commands come through the "
                "headers exchange, each portal's to its own queue.",
                "channel": {"$ref": "#/channels/portalUpdates"},
                "messages": [{"$ref": "#/channels/portalUpdates/messages/UpdateCommand"}],
                "reply": {
                    "address": {"location": "$message.header#/reply_to"},
                    "channel": {"$ref": "#/channels/replies"},
                },
            },
            "reportSuccess": {
                "action": "send",
                "summary": "A success event for a command without reply_to.",
                "channel": {"$ref": "#/channels/results"},
                "messages": [{"$ref": "#/channels/results/messages/SuccessEvent"}],
            },
            "reportFailure": {
                "action": "send",
                "summary": "A failure event: the command ended without being applied.",
                "channel": {"$ref": "#/channels/deadLetters"},
                "messages": [{"$ref": "#/channels/deadLetters/messages/FailureEvent"}],
            },
        },
        "components": {
            "messages": {
                "UpdateCommand": {
                    **_message("UpdateCommand", "Update command", "crm.item.update parameters"),
                    "headers": _command_headers(),
                },
                "SuccessEvent": _message("SuccessEvent", "Success event", "the portal applied it"),
                "FailureEvent": _message(
                    "FailureEvent", "Failure event", "the command ended without being applied"
                ),
            },
            "schemas": _components(
                {
                    "UpdateCommand": command_json_schema(),
                    "SuccessEvent": SuccessEvent.model_json_schema(by_alias=True),
                    "FailureEvent": FailureEvent.model_json_schema(by_alias=True),
                }
            ),
        },
    }
