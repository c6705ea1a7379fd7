"""`b24-worker publish FILE`: check every command of a file, publish them with
confirms, and with `--wait` collect each one's outcome.

    read + check every line -> (any invalid: stop, unless --skip-invalid)
      -> publish in file order, persistent, each with a message id, a correlation
         id, (with --portal) the x-b24-portal header, (with --job) the x-b24-job
         header, counted in the job store first, and (with --wait) reply_to; a
         window of unconfirmed publishes; a nacked one is sent again (so it may
         land after later lines), then reported
      -> --wait: events by correlation id until all came or --timeout passed
      -> summary: succeeded, failed by class and code, missing; failures to a file

Commands go to UPDATE_QUEUE, or, when the workers run with SHARDS > 0, to the
exchange of that name with each item's routing key (see `broker`): the lines of
one item then reach one shard, in file order.

Exit code: 0 when every command was published (and, with --wait, applied);
1 when a line was invalid, a publish not confirmed, or an outcome failed or
missing; 2 when the run could not start (file, settings, broker).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aio_pika
from aio_pika.abc import DeliveryMode

from schemas import FailureEvent
from schemas.wire import JOB_HEADER, PORTAL_HEADER
from worker import tracing
from worker.tools.broker import (
    ConfirmedPublisher,
    EntryPoint,
    PublishRefusedError,
    ToolError,
    connect,
    entry_point,
)
from worker.tools.progress import Progress
from worker.tools.replies import Event, Replies
from worker.tools.sources import Format, Line, read_commands

if TYPE_CHECKING:
    from worker.bulk import JobStore

__all__ = ["PublishOptions", "default_failures_path", "publish_file"]

_SHOWN_LINES = 20  # line numbers listed at most per problem


@dataclass(frozen=True)
class PublishOptions:
    path: str
    amqp_url: str
    queue: str
    fmt: Format | None = None
    skip_invalid: bool = False
    wait: bool = False
    timeout_s: float = 300.0
    failures_path: str | None = None
    window: int = 256  # publishes awaiting their confirm at most
    portal: str | None = None  # the x-b24-portal header of every command
    job: str | None = None  # the x-b24-job header of every command


def default_failures_path(path: str) -> str:
    """`orders.csv` -> `orders.failures.jsonl`, next to the input."""
    source = Path(path)
    return str(source.with_name(source.stem + ".failures.jsonl"))


async def publish_file(
    options: PublishOptions,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    jobs: JobStore | None = None,
) -> int:
    """``jobs``: where ``options.job`` is counted (needed with it)."""
    if options.job is not None and jobs is None:
        raise ValueError("a job needs the job store")
    try:
        lines = read_commands(options.path, fmt=options.fmt)
    except ToolError as exc:
        print(f"b24-worker publish: {exc}", file=err)
        return 2
    invalid = [line for line in lines if not line.valid]
    for line in invalid:
        print(f"{options.path}:{line.number}: INVALID {line.problem}", file=out)
    if invalid and not options.skip_invalid:
        print(
            f"{len(invalid)} of {len(lines)} commands invalid: nothing published "
            "(--skip-invalid publishes the valid ones)",
            file=out,
        )
        return 1
    valid = [line for line in lines if line.valid]
    try:
        connection = await connect(options.amqp_url)
    except ToolError as exc:
        print(f"b24-worker publish: {exc}", file=err)
        return 2
    async with connection:
        try:
            entry = await entry_point(connection, options.queue)
        except ToolError as exc:
            print(f"b24-worker publish: {exc}", file=err)
            return 2
        publisher = await ConfirmedPublisher(connection).open()
        replies = Replies(await connection.channel()) if options.wait else None
        reply_to = await replies.open() if replies else None
        run = _Run(
            publisher=publisher,
            entry=entry,
            portal=options.portal,
            job=options.job,
            reply_to=reply_to,
            replies=replies,
        )
        if options.job is not None and jobs is not None:
            # Counted before they are published: a worker may end them at once.
            await jobs.publishing(options.job, len(valid))
        unconfirmed = await run.publish_all(valid, window=options.window, err=err)
        if options.job is not None and jobs is not None and unconfirmed:
            await jobs.publishing(options.job, -len(unconfirmed))
        published = [line for line in valid if line.number not in unconfirmed]
        print(
            f"published {len(published)} of {len(lines)} commands to {entry} "
            f"({len(invalid)} invalid, {len(unconfirmed)} not confirmed)"
            + (f" as job {options.job}: b24-worker jobs show {options.job}" if options.job else ""),
            file=out,
        )
        for number, reason in sorted(unconfirmed.items())[:_SHOWN_LINES]:
            print(f"{options.path}:{number}: NOT CONFIRMED {reason}", file=out)
        failed_run = bool(invalid or unconfirmed)
        if replies is None:
            return 1 if failed_run else 0
        outcomes = await run.wait_for(published, timeout_s=options.timeout_s, err=err)
    failures_path = options.failures_path or default_failures_path(options.path)
    incomplete = _report(outcomes, published, failures_path, out=out)
    return 1 if failed_run or incomplete else 0


class _Run:
    def __init__(
        self,
        *,
        publisher: ConfirmedPublisher,
        entry: EntryPoint,
        portal: str | None,
        job: str | None,
        reply_to: str | None,
        replies: Replies | None,
    ) -> None:
        self._publisher = publisher
        self._entry = entry
        self._portal = portal
        self._headers = {
            name: value
            for name, value in ((PORTAL_HEADER, portal), (JOB_HEADER, job))
            if value is not None
        }
        self._reply_to = reply_to
        self._replies = replies
        self._prefix = uuid.uuid4().hex[:12]
        self._waits: dict[int, asyncio.Future[Event]] = {}

    def correlation_id(self, line: Line) -> str:
        return f"{self._prefix}-{line.number}"

    async def publish_all(self, lines: list[Line], *, window: int, err: TextIO) -> dict[int, str]:
        """Publish in file order; the lines whose publish was not confirmed, with why."""
        progress = Progress("published", len(lines), stream=err)
        slots = asyncio.Semaphore(window)
        unconfirmed: dict[int, str] = {}

        async def one(line: Line) -> None:
            exchange, routing_key = self._route(line)
            try:
                await self._publisher.publish(self._message(line), routing_key, exchange=exchange)
                progress.advance()
            except PublishRefusedError as exc:
                unconfirmed[line.number] = str(exc)
            except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
                unconfirmed[line.number] = (
                    f"{type(exc).__name__}: the broker may or may not have it"
                )
            finally:
                slots.release()

        tasks = []
        for line in lines:
            await slots.acquire()
            tasks.append(asyncio.create_task(one(line)))
        await asyncio.gather(*tasks)
        progress.close()
        for number in unconfirmed:
            self._waits.pop(number, None)
        return unconfirmed

    def _route(self, line: Line) -> tuple[str, str]:
        if line.item is None:  # pragma: no cover - only checked lines are published
            raise ValueError(f"line {line.number} was published without being checked")
        return self._entry.route(self._portal, *line.item)

    def _message(self, line: Line) -> aio_pika.Message:
        correlation_id = self.correlation_id(line)
        if self._replies is not None and line.number not in self._waits:
            self._waits[line.number] = self._replies.expect(correlation_id)
        headers: dict[str, Any] = dict(self._headers)
        tracing.inject_current(headers)
        return aio_pika.Message(
            body=line.body,
            headers=headers or None,
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            correlation_id=correlation_id,
            reply_to=self._reply_to,
            # The broker's queue reports its oldest message's age from this
            # (head_message_timestamp), and the worker the delay to its delivery.
            timestamp=datetime.now(UTC),
        )

    async def wait_for(
        self, lines: list[Line], *, timeout_s: float, err: TextIO
    ) -> dict[int, Event | None]:
        """Each published line's event, or None when none came within `timeout_s`."""
        progress = Progress("outcomes", len(lines), stream=err)
        pending = {self._waits[line.number] for line in lines}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending and loop.time() < deadline:
            done, pending = await asyncio.wait(
                pending, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
            )
            progress.advance(len(done))
        progress.close()
        return {line.number: _result(self._waits[line.number]) for line in lines}


def _result(future: asyncio.Future[Event]) -> Event | None:
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    future.cancel()
    return None


def _report(
    outcomes: dict[int, Event | None], published: list[Line], failures_path: str, *, out: TextIO
) -> bool:
    """Print the summary table and write the failure events; True when not all succeeded."""
    rows: Counter[str] = Counter()
    failures: list[FailureEvent] = []
    missing: list[int] = []
    for number, event in outcomes.items():
        if event is None:
            missing.append(number)
        elif isinstance(event, FailureEvent):
            failures.append(event)
            rows[f"failed {event.error.error_class} {event.error.code}"] += 1
        else:
            rows["succeeded"] += 1
    table = [("succeeded", rows.pop("succeeded", 0))]
    table += sorted(rows.items(), key=lambda row: (-row[1], row[0]))
    table.append(("missing", len(missing)))
    width = max(len(name) for name, _ in table) + 2
    print(f"{'outcome':<{width}}count", file=out)
    for name, count in table:
        print(f"{name:<{width}}{count}", file=out)
    if failures:
        with open(failures_path, "w", encoding="utf-8") as stream:
            for event in failures:
                stream.write(event.to_json().decode() + "\n")
        print(f"{len(failures)} failure events written to {failures_path}", file=out)
    if missing:
        shown = ", ".join(str(number) for number in sorted(missing)[:_SHOWN_LINES])
        more = f" and {len(missing) - _SHOWN_LINES} more" if len(missing) > _SHOWN_LINES else ""
        print(
            f"no outcome within the timeout for lines {shown}{more} "
            "(they may still be applied later)",
            file=out,
        )
    return bool(failures or missing)
