"""Coalescing (COALESCE=safe): commands of one item that wait in the worker go as one call.

When a command's call is about to leave, the commands of its item held behind
it (`ordering`) ride along, in arrival order, as long as each merges safely:
the call carries their fields together, a later command's value winning, and
the portal saves the item once. Each command still gets its own outcome event:
`coalescedWith` names the others applied in the same call, `superseded` the
fields of its own that a later one set to another value (the item shows the
later value: not `notApplied`).

Never merged, so each goes in a call of its own as without coalescing:

    fm values      an entry's id, its value and its deletion name one entry each;
                   two such lists are not one list, and additions are not idempotent
    files          an upload, a file kept or removed
    stage moves    commands that set `stageId` or `categoryId` unless they set both
                   to the same values: each stage move can start the stage's
                   automation rules and robots, and a merged call would skip a stage
    flags          a different `useOriginalUfNames` (the fields' names mean other
                   fields)
    retries        a retry copy, and a command split from a rejected merge
    batches        a command whose parameters a batch cannot carry (it goes alone anyway)

A merged call is carried out only when the portal applies it. Any other answer
that is about the call (a rate limit, a portal-wide state) puts the commands
back as they were, to merge again on the next call; an answer about its
content (an error, a lost answer) splits it: each command then goes alone, in
order, so one bad command never fails its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from worker.bitrix import php_query
from worker.flow.applied import is_file
from worker.flow.jobs import Job
from worker.flow.outcomes import Succeeded

__all__ = ["COALESCE_MODES", "Coalesce", "Merge", "applied_together", "goes_alone"]

Coalesce = Literal["off", "safe"]
COALESCE_MODES: tuple[Coalesce, ...] = ("off", "safe")

# Fields whose change moves the item between stages: merged only when equal.
_STAGE_FIELDS = ("categoryId", "stageId")


def goes_alone(job: Job) -> bool:
    """True for a command that is never merged with another (see the module's list)."""
    command = job.command
    if command is None or job.alone or job.source == "retry":
        return True
    fields = job.params.get("fields", {})
    return "fm" in fields or any(is_file(value) for value in fields.values())


def _stage_move(job: Job) -> tuple[Any, Any] | None:
    fields = job.params.get("fields", {})
    if not any(name in fields for name in _STAGE_FIELDS):
        return None
    return (fields.get("categoryId"), fields.get("stageId"))


@dataclass
class Merge:
    """The commands of one item that go as one call, the item's active command first."""

    parts: list[Job]
    _stage: tuple[Any, Any] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        for part in self.parts:
            self._stage = self._stage or _stage_move(part)

    def fits(self, job: Job) -> bool:
        """True when ``job`` (checked and encoded) may ride in the call after the others."""
        lead = self.parts[0].command
        command = job.command
        if goes_alone(job) or lead is None or command is None:
            return False
        if command.useOriginalUfNames != lead.useOriginalUfNames:
            return False
        stage = _stage_move(job)
        return stage is None or self._stage is None or stage == self._stage

    def add(self, job: Job) -> None:
        """Take ``job``, which `fits` and is encoded, into the call (fields a batch
        carries one by one carry merged too)."""
        self.parts.append(job)
        self._stage = self._stage or _stage_move(job)

    def job(self) -> Job:
        """The call's job: the first command's delivery, the merged fields; `parts` holds
        the commands it carries."""
        lead = self.parts[0]
        if len(self.parts) == 1:
            return lead
        params = _merged_params(self.parts)
        return Job(
            message=lead.message,
            message_id=lead.message_id,
            source=lead.source,
            command=lead.command,
            attempts=lead.attempts,
            params=params,
            query=php_query(params),
            parts=tuple(self.parts),
        )


def _merged_params(parts: list[Job]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for part in parts:
        fields.update(part.params.get("fields", {}))
    return {**parts[0].params, "fields": fields}


def applied_together(merged: Job, outcome: Succeeded) -> list[tuple[Job, Succeeded]]:
    """The success of each command a merged call carried.

    A field a later command set to another value is `superseded` for the earlier
    ones; what the returned item does not show as sent is `notApplied` for the
    command whose value was sent.
    """
    parts = merged.parts
    ids = [part.message_id for part in parts]
    results = []
    for index, part in enumerate(parts):
        own = part.params.get("fields", {})
        later = [p.params.get("fields", {}) for p in parts[index + 1 :]]
        superseded = tuple(
            name
            for name, value in own.items()
            if any(name in fields and fields[name] != value for fields in later)
        )
        not_applied = tuple(
            name for name in outcome.not_applied if name in own and name not in superseded
        )
        others = tuple(message_id for message_id in ids if message_id != part.message_id)
        results.append(
            (
                part,
                Succeeded(
                    item=outcome.item,
                    not_applied=not_applied,
                    coalesced_with=others,
                    superseded=superseded,
                ),
            )
        )
    return results
