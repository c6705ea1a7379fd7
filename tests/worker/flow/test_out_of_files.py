"""A call this process could not open for want of a file descriptor.

The worker's own caller, client and limiter, in the in-memory flow; the portal
is httpx's MockTransport, raising what httpx raises when no socket can be made.
Such a call says nothing of the command or the portal: its commands wait a
moment in the worker and go again, no attempt used, no copy through a delay
tier; any other connection failure uses an attempt.
"""

from __future__ import annotations

import errno
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

import worker.bitrix.transport as transport
import worker.flow.calling as calling
from schemas.wire import ATTEMPTS_HEADER
from tests.worker.bitrix.fakes import WEBHOOK_URL, Answer, ScriptedPortal, connect_error, envelope
from tests.worker.flow.memory import MemoryFlow, deal
from worker.bitrix import BitrixClient, WebhookAuth
from worker.flow.calling import METHOD, Caller, Decision
from worker.flow.jobs import Job
from worker.flow.observer import QuietObserver
from worker.flow.outcomes import Settled
from worker.limiter import CallLimiter, OperatingBudget, RequestPacer, SystemClock
from worker.observability.metrics import Metrics
from worker.observability.observer import MetricsObserver

WAIT_S = 0.05


def updated() -> httpx.Response:
    return envelope({"item": {"id": 1, "title": "done"}})


def unscripted(job: Job) -> Decision:
    raise AssertionError("the scripted portal answers, through the worker's own caller")


@asynccontextmanager
async def flow_against(
    answers: list[Answer], monkeypatch: pytest.MonkeyPatch, metrics: Metrics | None = None
) -> AsyncIterator[tuple[MemoryFlow, ScriptedPortal, list[float]]]:
    monkeypatch.setattr(calling, "OUT_OF_FILES_WAIT_S", WAIT_S)
    monkeypatch.setattr(transport, "_out_of_files_said_at", None)
    sent_at: list[float] = []

    def answer(request: httpx.Request) -> Answer:
        sent_at.append(time.monotonic())
        return answers.pop(0) if answers[1:] else answers[0]

    portal = ScriptedPortal(answer)
    clock = SystemClock()
    limiter = CallLimiter(
        method=METHOD,
        budget=OperatingBudget(limit_s=480.0, window_s=600.0, clock=clock),
        pacer=RequestPacer(burst=50, rate_per_s=50.0, clock=clock),
    )
    async with portal.client() as http:
        client = BitrixClient(http=http, auth=WebhookAuth(WEBHOOK_URL))
        observer = QuietObserver() if metrics is None else MetricsObserver(metrics, portal="acme")
        caller = Caller(client=client, limiter=limiter, observer=observer)
        flow = MemoryFlow(unscripted, limiter=limiter, caller=caller, linger_s=0.0)
        async with flow.running():
            yield flow, portal, sent_at


async def test_a_call_without_a_file_descriptor_waits_and_goes_again_using_no_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_files = connect_error(errno.EMFILE)
    answers: list[Answer] = [no_files, no_files, updated()]
    metrics = Metrics()
    async with flow_against(answers, monkeypatch, metrics) as (flow, portal, sent_at):
        await flow.deliver(deal(1, "done"), message_id="m")
        await flow.until_settled(1)
    assert len(portal.requests) == 3
    # Each call after one that could not open waited before it went.
    assert all(later - earlier >= WAIT_S for earlier, later in itertools.pairwise(sent_at))
    assert [queue for queue, _, _ in flow.publisher.published] == ["results"]
    [event] = flow.events("results")
    assert event["attempts"] == 1  # the call that was answered
    assert flow.observer.ends == [("m", Settled.SUCCEEDED)]
    assert metrics.total("b24_out_of_files_total", portal="acme") == 2


async def test_another_connection_failure_uses_an_attempt_and_a_delay_tier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = connect_error(errno.ECONNREFUSED)
    answers: list[Answer] = [refused, updated()]
    async with flow_against(answers, monkeypatch) as (flow, portal, _):
        await flow.deliver(deal(1, "later"), message_id="m")
        await flow.until_settled(1)
    assert len(portal.requests) == 1
    [(queue, properties, _)] = flow.publisher.published
    assert queue == "updates.retry.5s"
    assert (properties.headers or {})[ATTEMPTS_HEADER] == 1
    assert flow.observer.ends == [("m", Settled.RETRIED)]
    assert flow.observer.retried_for == {"m": "NoAnswerError (ConnectError)"}
