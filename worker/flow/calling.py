"""Calling the portal for a group of jobs and deciding what each answer means.

One call carries the group: a `batch` (halt=0) when there are several jobs, or
when the limiter's leave was given for a batch (`Leave.as_batch`: the portal
charges whole batches to an account of their own), a single JSON call
otherwise. The limiter is asked first and waited out; its waits, the portal's
rate-limit answers and a call this process could not open for want of a file
descriptor never count as attempts. Each job gets a Decision: an Outcome to
settle, `Again` (send it once more, no attempt used, after `after_s`), or
`PortalDown` (a portal-wide state: the job is handed back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.events import ErrorClass
from worker import tracing
from worker.bitrix import (
    BitrixClient,
    CommandAnswer,
    NoAnswerError,
    PortalError,
    TokenRenewalError,
    UnexpectedAnswerError,
)
from worker.flow.applied import not_applied
from worker.flow.classify import Verdict, classify
from worker.flow.jobs import Job
from worker.flow.observer import Observer
from worker.flow.outcomes import Failed, Outcome, Retry, Succeeded
from worker.limiter import CallLimiter, Leave, OperatingReport, Refused

__all__ = [
    "METHOD",
    "OUT_OF_FILES",
    "OUT_OF_FILES_WAIT_S",
    "Again",
    "Caller",
    "Calls",
    "Decision",
    "Doubt",
    "PortalDown",
]

METHOD = "crm.item.update"

# A call that could not open a connection because the process had no file
# descriptor left: about the worker, not the command. Its commands wait this
# long, holding their items and the call's slot, then go again.
OUT_OF_FILES = "TOO_MANY_OPEN_FILES"
OUT_OF_FILES_WAIT_S = 1.0


@dataclass(frozen=True)
class Again:
    """Send the command once more, no attempt used, once ``after_s`` has passed."""

    reason: str
    after_s: float = 0.0


@dataclass(frozen=True)
class PortalDown:
    state: str
    code: str


@dataclass(frozen=True)
class Doubt:
    """The answer was lost for a command whose values were counted before its call:
    the item is read back (`readback`) instead of ending it `in_doubt` at once."""

    code: str


Decision = Outcome | Again | PortalDown | Doubt


class Calls(Protocol):
    """What the pipeline asks of its caller: `Caller` against a portal, or a fake in tests."""

    async def send(self, jobs: list[Job], leave: Leave) -> list[tuple[Job, Decision]]:
        """One call for the jobs, which the limiter's leave allows; a decision for each."""


class Caller:
    """Sends a group of jobs to the portal in one call, with the limiter's leave."""

    def __init__(self, *, client: BitrixClient, limiter: CallLimiter, observer: Observer) -> None:
        self._client = client
        self._limiter = limiter
        self._observer = observer

    async def send(self, jobs: list[Job], leave: Leave) -> list[tuple[Job, Decision]]:
        """Send the jobs in one call; give the leave back with what the portal reported."""
        reports: list[OperatingReport] = []
        as_batch = len(jobs) > 1 or leave.as_batch
        self._observer.waited(leave.waited_s)
        self._observer.sending(len(jobs))
        call = tracing.start_call(
            (part.span for job in jobs for part in (job.parts or [job])),
            waited_s=leave.waited_s,
            commands=len(jobs),
        )
        started = time.perf_counter()
        try:
            decisions = await self._call(jobs, reports, as_batch=as_batch)
            tracing.end(call, batch=as_batch)
            return decisions
        except BaseException as exc:
            tracing.end(call, error=type(exc).__name__)
            raise
        finally:
            duration = time.perf_counter() - started
            self._observer.answered(duration)
            account = await self._limiter.settle(
                leave, reports, duration_s=duration, batch=as_batch
            )
            self._observer.budget_left(account, await self._limiter.remaining_s(account))

    async def _call(
        self, jobs: list[Job], reports: list[OperatingReport], *, as_batch: bool
    ) -> list[tuple[Job, Decision]]:
        try:
            if not as_batch:
                answers = {"c0": await self._client.call(METHOD, jobs[0].params)}
            else:
                batch = await self._client.batch(
                    {f"c{i}": (METHOD, job.query or job.params) for i, job in enumerate(jobs)}
                )
                answers = dict(batch.commands)
        except PortalError as exc:
            seen: set[str] = set()
            scope: Refused = "batch" if as_batch else "call"
            return [
                (job, await self._answer(job, exc.code, exc.status, exc.description, seen, scope))
                for job in jobs
            ]
        except TokenRenewalError:
            return [(job, PortalDown("bad_credentials", "TOKEN_RENEWAL_FAILED")) for job in jobs]
        except NoAnswerError as exc:
            if exc.out_of_files:
                self._observer.out_of_files()
                return [(job, Again(OUT_OF_FILES, after_s=OUT_OF_FILES_WAIT_S)) for job in jobs]
            what, kind = type(exc).__name__, exc.kind
            return [(job, _doubt(job, what, kind, maybe_sent=exc.maybe_sent)) for job in jobs]
        except UnexpectedAnswerError as exc:
            what, kind = type(exc).__name__, f"HTTP {exc.status}, {exc.reason}"
            return [(job, _doubt(job, what, kind, maybe_sent=True)) for job in jobs]
        decisions = []
        limited: set[str] = set()
        for index, job in enumerate(jobs):
            answer = answers[f"c{index}"]
            if answer.ran and answer.time is not None:
                reports.append(
                    OperatingReport(answer.time.operating, answer.time.operating_reset_at)
                )
            decisions.append((job, await self._per_command(job, answer, limited)))
        return decisions

    async def _answer(
        self,
        job: Job,
        code: str,
        status: int | None,
        description: str,
        limited: set[str],
        scope: Refused,
    ) -> Decision:
        """The decision for an error; a rate limit is reported to the limiter once per call.

        ``scope`` is what the error answered: a single call, a whole batch, or
        one command inside a batch.
        """
        verdict = classify(code, status)
        if verdict.kind == "rate_limit":
            if code not in limited:
                limited.add(code)
                await self._rate_limited(code, scope)
            return Again(code)
        job.attempts += 1
        return _decide(job, verdict, code, description)

    async def _per_command(self, job: Job, answer: CommandAnswer, limited: set[str]) -> Decision:
        if not answer.ran:
            job.attempts += 1
            return Retry("the portal did not run the command in its batch")
        if answer.error is None:
            job.attempts += 1
            item = _item_of(answer.result)
            sent = job.params.get("fields", {})
            return Succeeded(item=item, not_applied=tuple(not_applied(sent, item)))
        code, description = answer.error.code, answer.error.description
        # A command in a batch has no HTTP status; the free-plan ACCESS_DENIED is
        # told from the item-rights one by its description.
        status = 403 if code == "ACCESS_DENIED" and "commercial plan" in description else None
        return await self._answer(job, code, status, description, limited, "command")

    async def _rate_limited(self, code: str, scope: Refused) -> None:
        self._observer.rate_limited(code)
        if code == "QUERY_LIMIT_EXCEEDED":
            await self._limiter.query_limited()
        elif code == "OPERATION_TIME_LIMIT":
            await self._limiter.time_limited(scope)


def _decide(job: Job, verdict: Verdict, code: str, description: str) -> Decision:
    if verdict.kind == "portal":
        job.attempts -= 1  # a portal-wide state is not the command's attempt
        return PortalDown(verdict.portal_state or "blocked", code)
    if verdict.kind == "retry":
        command = job.command
        # An error answer other than a refused token means the portal took the
        # request in and may have applied part of it: not re-sent blindly.
        if code != "expired_token" and command is not None and not command.is_idempotent:
            if job.before is not None:
                return Doubt(code or "ERROR")
            return Failed(
                ErrorClass.IN_DOUBT,
                code or "ERROR",
                f"the portal answered {code or 'an error'} ({description}) after taking the "
                "request in, and the command is not idempotent (its fm values may be added again, "
                "or it uploads files): it was not sent again; check the item before replaying it",
            )
        return Retry(f"{code or 'error'}: {description}")
    return Failed(verdict.error_class or ErrorClass.UNKNOWN, code, description)


def _doubt(job: Job, what: str, kind: str, *, maybe_sent: bool) -> Decision:
    """``what`` failed (the error's class, the code of an `in_doubt` failure), and
    ``kind`` says how (a retry's reason)."""
    job.attempts += 1
    command = job.command
    if maybe_sent and command is not None and not command.is_idempotent:
        if job.before is not None:
            return Doubt(what)
        return Failed(
            ErrorClass.IN_DOUBT,
            what,
            "the call failed after the request may have reached the portal, and the command "
            "is not idempotent (its fm values may be added again, or it uploads files): it was "
            "not sent again; check the item before replaying it",
        )
    return Retry(f"{what} ({kind})")


def _item_of(result: Any) -> dict[str, Any]:
    if isinstance(result, dict) and isinstance(result.get("item"), dict):
        item: dict[str, Any] = result["item"]
        return item
    return {}
