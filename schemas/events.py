"""The events the worker publishes: one terminal outcome per command.

A success goes to the message's reply_to, or to RESULT_QUEUE; a failure goes to
DEAD_LETTER_QUEUE (and to reply_to when there is one). Both carry
`contractVersion`, so consumers can tell formats apart as the contract grows.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

__all__ = [
    "CONTRACT_VERSION",
    "ErrorClass",
    "EventError",
    "FailureEvent",
    "SuccessEvent",
]

CONTRACT_VERSION: Literal[1] = 1


class ErrorClass(StrEnum):
    """Why a command ended without being applied.

    Portal-wide conditions (bad credentials, a blocked portal, rate limits) are
    states of the worker, not outcomes of a message, and have no class here.
    """

    VALIDATION = "validation"  # the command is wrong; sending it again cannot help
    NOT_FOUND = "not_found"  # no such item, or no such entity type on the portal
    ACCESS_DENIED = "access_denied"  # no right to edit this item or move its stage
    PLAN_RESTRICTED = "plan_restricted"  # the portal's plan forbids the change
    TRANSIENT = "transient"  # retryable failures that outlasted the attempts
    IN_DOUBT = "in_doubt"  # not idempotent, and whether it was applied is unknown
    PORTAL_GONE = "portal_gone"  # the portal is gone for good (the application was uninstalled)
    ABORTED = "aborted"  # its bulk job was aborted before the command was sent: never sent
    UNKNOWN = "unknown"  # an error code the worker does not know (kept in `code`)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    contractVersion: Literal[1] = CONTRACT_VERSION
    messageId: str
    correlationId: str | None = None
    entityTypeId: int | None
    id: int | None
    attempts: Annotated[int, Field(ge=0)]
    portal: str | None = Field(
        default=None,
        description="the key of the portal the command was for (its x-b24-portal header, "
        "or the worker's default portal); null when it named none the worker serves "
        "(one gone for good, class portal_gone, is named). Item 351 of two portals is told "
        "apart by it",
    )
    job: str | None = Field(
        default=None,
        description="the bulk job the command belonged to (its x-b24-job header); "
        "null for a command of no job",
    )

    def to_json(self) -> bytes:
        """The event as published: JSON with the contract's field names."""
        return self.model_dump_json(by_alias=True).encode()


class SuccessEvent(_Event):
    """The portal applied the command."""

    status: Literal["succeeded"] = "succeeded"
    entityTypeId: int
    id: int
    item: dict[str, Any] = Field(description="the item as the portal returned it")
    ignoredFields: list[str] = Field(
        default_factory=list,
        description="fields the reference does not list for this type: not sent",
    )
    notApplied: list[str] = Field(
        default_factory=list,
        description="sent fields whose value in the returned item differs from what was sent",
    )
    verifiedByReadBack: bool = Field(
        default=False,
        description="true when the answer was lost and the worker found the command applied "
        "by reading the item back (its fm entries there, and not there before the send); "
        "`item` is then the item as read",
    )
    coalescedWith: list[str] = Field(
        default_factory=list,
        description="with COALESCE=safe, the message ids of the other commands of this item "
        "applied in the same call as this one (their fields merged, the later value winning); "
        "empty when it went alone",
    )
    superseded: list[str] = Field(
        default_factory=list,
        description="fields of this command that a later command applied in the same call "
        "set to another value: the item shows the later value (not listed in notApplied)",
    )


class EventError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    # Open: a newer worker may report a class this one does not know (the contract's
    # evolution rule), so a reader keeps it as text rather than refusing the event.
    error_class: str = Field(
        alias="class",
        description="why the command failed; new classes may appear within a "
        "contractVersion: treat one you do not know as a failure to look at",
        json_schema_extra={"examples": [str(member) for member in ErrorClass]},
    )
    code: str = Field(description="the portal's error code, or the worker's own for validation")
    description: str = Field(description="one line a producer's developer can act on")
    retryable: bool


class FailureEvent(_Event):
    """The command ended without being applied; `command` and `properties` allow
    an exact replay."""

    status: Literal["failed"] = "failed"
    error: EventError
    command: dict[str, Any] | str = Field(
        description="the original body, or its text when it was not a JSON object"
    )
    properties: dict[str, Any] = Field(
        default_factory=dict, description="the original AMQP properties and headers"
    )
    failedAt: datetime | None = Field(
        default=None,
        description="when the worker ended the command (ISO 8601, UTC); null in events "
        "of workers before it was added (`dlq purge --older-than` then reads the dead "
        "letter's AMQP timestamp)",
    )

    def to_json(self) -> bytes:
        """As `_Event.to_json`; a command nested deeper than the serializer goes (a
        refused body that Python's JSON reader still read) is kept as its JSON text."""
        try:
            return super().to_json()
        except PydanticSerializationError:
            if isinstance(self.command, str):
                raise
        try:
            text = json.dumps(self.command)
        except RecursionError:
            text = "(a JSON value nested too deeply to be kept)"
        return self.model_copy(update={"command": text}).to_json()
