"""What the flow tells the bulk jobs' ledger, and asks of it.

A command with an x-b24-job header belongs to a bulk job. When it ends (a
success or a failure event confirmed by the broker, before the delivery is
acked) its outcome is written down under the job, the latest end of each
message id counting once; and a command whose job was aborted ends as
`aborted` without being sent. The ledger
itself (`worker.bulk`) lives above the flow; the flow knows only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["JobResult", "Ledger"]


@dataclass(frozen=True)
class JobResult:
    """One command's end, as its job keeps it."""

    job: str
    message_id: str
    status: Literal["succeeded", "failed"]
    at: float  # seconds since the epoch
    portal: str | None = None
    entity_type_id: int | None = None
    item_id: int | None = None
    error_class: str | None = None
    code: str | None = None
    description: str | None = None
    # A failure keeps its command and properties as its failure event does, so the
    # job's failures can be read and sent again without the dead-letter queue.
    command: dict[str, Any] | str | None = None
    properties: dict[str, Any] | None = None


class Ledger(Protocol):
    async def record(self, result: JobResult) -> None:
        """Written down (or known already) when this returns."""

    def aborted(self, job: str) -> bool:
        """True once the job was aborted: its commands not sent yet are not sent."""
