"""The message contract of the update worker: pure data, no I/O.

`parse_command(body)` turns a message body into a typed crm.item.update
command or raises `CommandValidationError` with a one-line reason; the events the
worker publishes are `SuccessEvent` and `FailureEvent`.
"""

from schemas.command import (
    AnyUpdateCommand,
    UpdateCommand,
    command_json_schema,
    parse_command,
)
from schemas.custom_fields import FieldDefinition, validate_custom_fields
from schemas.errors import CommandValidationError, Problem
from schemas.events import CONTRACT_VERSION, ErrorClass, EventError, FailureEvent, SuccessEvent

__all__ = [
    "CONTRACT_VERSION",
    "AnyUpdateCommand",
    "CommandValidationError",
    "ErrorClass",
    "EventError",
    "FailureEvent",
    "FieldDefinition",
    "Problem",
    "SuccessEvent",
    "UpdateCommand",
    "command_json_schema",
    "parse_command",
    "validate_custom_fields",
]
