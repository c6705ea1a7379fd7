"""Doubt resolved by reading the item back.

A command that adds fm entries (phones, e-mails...) is not idempotent: when
the answer to its call is lost, sending it again could add its values twice.
Instead of ending it `in_doubt` for a person to check:

    before   just before its first call, the item is read (one `batch` of
             crm.item.get for every such command of the call, paced like any
             call) and the entries matching each value it adds are counted
    doubt    its answer is lost: the call may or may not have been carried out
    wait     until the original request can no longer be running: the portal
             cuts a request at 60 s (B24_READ_BACK_AFTER_S)
    read     the items again, paced and tried again on failure like any read
    decide   every value it adds is there more often than before: applied, a
             success marked verifiedByReadBack; none is: not applied, it goes
             to the portal once more; anything else, or no reading: `in_doubt`,
             as without this

A command that uploads files is not read back (whether a file arrived cannot
be told from the item); it ends `in_doubt` as before. An item read without
its `fm` cannot be checked either.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from schemas.events import ErrorClass
from worker.flow.applied import not_applied
from worker.flow.jobs import ItemKey, Job
from worker.flow.outcomes import Failed, Outcome, Succeeded

__all__ = ["ItemReader", "ReadBack"]

log = structlog.get_logger("worker.flow.readback")

Entry = tuple[str, str]  # (typeId, value)

_BEFORE_TRIES = 3  # readings just before a call, at most


class ItemReader(Protocol):
    async def items(self, keys: Sequence[ItemKey]) -> Mapping[ItemKey, dict[str, Any] | None]:
        """Each item as the portal returns it (None: it has none such); raises when the
        reading failed."""


def count_entries(item: Mapping[str, Any] | None, wanted: Counter[Entry]) -> Counter[Entry] | None:
    """How often each wanted (typeId, value) is among the item's fm entries; None when
    the item, or its fm, was not returned."""
    if item is None or not isinstance(item.get("fm"), list):
        return None
    found: Counter[Entry] = Counter()
    for entry in item["fm"]:
        if isinstance(entry, dict):
            key = (str(entry.get("typeId")), str(entry.get("value")))
            if key in wanted:
                found[key] += 1
    return found


class ReadBack:
    """Reads items before a doubtful command's call and after its lost answer."""

    def __init__(self, reader: ItemReader, *, after_s: float, tries: int = 6) -> None:
        """``after_s``: how long a request may still run after its answer was lost;
        ``tries``: readings tried at most, with a growing pause between."""
        self._reader = reader
        self.after_s = after_s
        self._tries = tries

    @staticmethod
    def wants(job: Job) -> bool:
        """True for a command whose doubt a reading can resolve: it adds fm values, and
        uploads no file."""
        command = job.command
        # fm first: asked of every command of every call, and most have none.
        return command is not None and bool(command.fm_additions()) and not command.uploads_files

    async def before(self, jobs: Sequence[Job]) -> None:
        """Count, for each job that wants it and has no count yet, its values on the item
        now. A job whose reading failed keeps none: a lost answer leaves it in doubt."""
        pending = [job for job in jobs if job.before is None and self.wants(job)]
        if not pending:
            return
        # Three tries at most (1.5 s of pauses): the call waits for them, and a portal
        # that is down is found by the call.
        items = await self._read([_key(job) for job in pending], tries=_BEFORE_TRIES)
        if items is None:
            return
        for job in pending:
            job.before = count_entries(items.get(_key(job)), _additions(job))

    async def resolve(self, jobs: Sequence[Job]) -> list[tuple[Job, Outcome | None]]:
        """What became of jobs whose answer was lost: an outcome, or None to send it again."""
        await asyncio.sleep(self.after_s)
        items = await self._read(sorted({_key(job) for job in jobs}), tries=self._tries)
        return [(job, self._decide(job, items)) for job in jobs]

    def _decide(
        self, job: Job, items: Mapping[ItemKey, dict[str, Any] | None] | None
    ) -> Outcome | None:
        wanted = _additions(job)
        before = job.before
        item = items.get(_key(job)) if items is not None else None
        after = count_entries(item, wanted)
        if before is not None and after is not None and item is not None:
            if all(after[entry] >= before[entry] + n for entry, n in wanted.items()):
                sent = job.params.get("fields", {})
                return Succeeded(
                    item=item, not_applied=tuple(not_applied(sent, item)), verified=True
                )
            if all(after[entry] == before[entry] for entry in wanted):
                log.info(
                    "readback.not_applied",
                    message_id=job.message_id,
                    item=job.key,
                    note="its values are not on the item: sent once more",
                )
                return None
        why = "the item could not be read" if after is None else "only some of its values are"
        return Failed(
            ErrorClass.IN_DOUBT,
            "READ_BACK_UNDECIDED",
            f"the answer was lost, and reading the item back did not tell whether the "
            f"command was applied ({why} there); it was not sent again: check the item",
        )

    async def _read(
        self, keys: Sequence[ItemKey], *, tries: int
    ) -> Mapping[ItemKey, dict[str, Any] | None] | None:
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 10.0))
            try:
                return await self._reader.items(keys)
            except Exception as exc:  # any failed reading is tried again, then given up
                log.warning("readback.unread", items=len(keys), attempt=attempt + 1, error=str(exc))
        return None


def _key(job: Job) -> ItemKey:
    key = job.key
    if key is None:  # pragma: no cover - only parsed commands are read back
        raise ValueError("a command read back has an item")
    return key


def _additions(job: Job) -> Counter[Entry]:
    command = job.command
    return command.fm_additions() if command is not None else Counter()
