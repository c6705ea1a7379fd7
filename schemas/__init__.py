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
from schemas.errors import CommandValidationError, Problem

__all__ = [
    "AnyUpdateCommand",
    "CommandValidationError",
    "Problem",
    "UpdateCommand",
    "command_json_schema",
    "parse_command",
]
