"""`b24-worker jobs`: follow, read and abort bulk jobs.

    list                     every job kept: progress, rate, estimate
    show JOB [--follow]      one job: a progress bar, counts by outcome, rate, ETA
    results JOB [--failed|--succeeded] [--format jsonl|csv]
                             each command's result; a failure with its command and
                             properties (`dlq replay --from FILE` sends those again)
    abort JOB                its commands not sent yet end as `aborted`, never sent

The rate is the job's results per second over its last 15 s, and the estimate
is what is left over that rate: once a run is paced by its portal, that is
the portal's pace, the commands queued ahead of the job's included.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from worker.bulk import JobState, JobStore
from worker.bulk.store import Which, result_to_doc
from worker.observability.status import duration

__all__ = ["abort", "list_jobs", "results", "show"]

_BAR = 30  # the progress bar's width, in characters
_CSV_COLUMNS = ("messageId", "status", "class", "code", "entityTypeId", "id", "portal", "at")


def _phase(state: JobState) -> str:
    if state.done:
        return "done"
    if state.aborted_at is not None:
        return "aborting"
    return "running" if state.ended else "queued"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _failed(state: JobState) -> int:
    return sum(state.failed.values())


def as_json(state: JobState) -> dict[str, object]:
    """A job as `jobs list --json` and `jobs show --json` print it."""
    return {
        "job": state.job,
        "state": _phase(state),
        "queued": state.expected,
        "ended": state.ended,
        "inFlight": state.in_flight,
        "succeeded": state.succeeded,
        "failed": dict(sorted(state.failed.items())),
        "ratePerSecond": None if state.rate is None else round(state.rate, 2),
        "etaSeconds": None if state.eta_s is None else round(state.eta_s, 1),
        "createdAt": state.created_at,
        "abortedAt": state.aborted_at,
        "firstResultAt": state.first_at,
        "lastResultAt": state.last_at,
    }


async def list_jobs(store: JobStore, *, as_json_lines: bool, out: TextIO) -> int:
    states = await store.jobs()
    if as_json_lines:
        for state in states:
            print(json.dumps(as_json(state)), file=out)
        return 0
    if not states:
        print("no jobs (publish FILE --job NAME starts one)", file=out)
        return 0
    rows = [("JOB", "STATE", "DONE", "SUCCEEDED", "FAILED", "RATE/S", "ETA")]
    for state in states:
        rate = "-" if state.rate is None else f"{state.rate:.1f}"
        rows.append(
            (
                state.job,
                _phase(state),
                f"{state.ended}/{state.expected}",
                str(state.succeeded),
                str(_failed(state)),
                rate,
                duration(state.eta_s),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out)
    return 0


def render(state: JobState) -> list[str]:
    """The lines `jobs show` prints for one job."""
    expected = state.expected
    share = state.ended / expected if expected else 0.0
    filled = round(share * _BAR)
    bar = "#" * filled + "." * (_BAR - filled)
    lines = [
        f"job {state.job}: {_phase(state)}",
        f"[{bar}] {share:6.1%}  {state.ended} of {expected} ended, {state.in_flight} to go",
        f"  succeeded  {state.succeeded}",
    ]
    for error_class, count in sorted(state.failed.items()):
        lines.append(f"  failed     {count}  ({error_class})")
    rate = "-" if state.rate is None else f"{state.rate:.1f}/s over the last 15 s"
    lines.append(f"  rate       {rate}")
    if state.done:
        lines.append(f"  ended      {_when(state.last_at)}")
    else:
        lines.append(f"  ETA        {duration(state.eta_s)}")
    lines.append(f"  created    {_when(state.created_at)}")
    if state.aborted_at is not None:
        lines.append(f"  aborted    {_when(state.aborted_at)}")
    return lines


async def show(
    store: JobStore,
    job: str,
    *,
    follow: bool,
    as_json_object: bool = False,
    interval_s: float = 1.0,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    state = await store.state(job)
    if state is None:
        print(f"b24-worker jobs show: no job {job!r} (b24-worker jobs list)", file=err)
        return 1
    if as_json_object:
        print(json.dumps(as_json(state), indent=2), file=out)
        return 0
    redraw = follow and out.isatty()
    drawn = 0
    while True:
        lines = render(state)
        if redraw and drawn:
            out.write(f"\x1b[{drawn}F\x1b[J")  # back to the first line drawn, cleared below
        out.write("\n".join(lines) + "\n")
        out.flush()
        drawn = len(lines)
        if not follow or state.done:
            return 0
        await asyncio.sleep(interval_s)
        state = await store.state(job) or state


async def results(
    store: JobStore, job: str, *, which: Which, fmt: str, out: TextIO, err: TextIO
) -> int:
    if await store.state(job) is None:
        print(f"b24-worker jobs results: no job {job!r} (b24-worker jobs list)", file=err)
        return 1
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow([*_CSV_COLUMNS, "description"])
    async for result in store.results(job, which):
        if writer is None:
            out.write(result_to_doc(result) + "\n")
            continue
        writer.writerow(
            [
                result.message_id,
                result.status,
                result.error_class or "",
                result.code or "",
                "" if result.entity_type_id is None else result.entity_type_id,
                "" if result.item_id is None else result.item_id,
                result.portal or "",
                f"{result.at:.3f}",
                result.description or "",
            ]
        )
    return 0


async def abort(store: JobStore, job: str, *, out: TextIO, err: TextIO) -> int:
    if not await store.abort(job):
        print(f"b24-worker jobs abort: no job {job!r} (b24-worker jobs list)", file=err)
        return 1
    state = await store.state(job)
    to_go = state.in_flight if state is not None else 0
    print(
        f"job {job} aborted at {_when(time.time())}: its {to_go} commands not ended yet end as "
        "`aborted` without being sent (those in a call already out end as that call does)",
        file=out,
    )
    return 0
