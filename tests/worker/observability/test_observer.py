"""A lane's observer: what a `message.settled` line says of each end."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from schemas.events import ErrorClass
from tests.worker.flow.memory import MemoryFlow, deal
from worker.flow.calling import Decision
from worker.flow.jobs import Job
from worker.flow.outcomes import Settled
from worker.observability.metrics import Metrics
from worker.observability.observer import MetricsObserver


def never_called(job: Job) -> Decision:
    raise AssertionError("no call is made here")


def job() -> Job:
    delivery = MemoryFlow(never_called).delivery(deal(7, "x"), message_id="m")
    return Job.from_message(delivery, "update")


@pytest.mark.parametrize(
    ("settled", "retried_for", "failure", "said"),
    [
        (Settled.SUCCEEDED, None, None, {}),
        (
            Settled.RETRIED,
            "NoAnswerError (ReadTimeout)",
            None,
            {"reason": "NoAnswerError (ReadTimeout)"},
        ),
        (Settled.FAILED, None, ErrorClass.TRANSIENT, {"error_class": "transient"}),
    ],
)
def test_a_settled_line_says_why_a_command_was_retried_or_failed(
    settled: Settled, retried_for: str | None, failure: ErrorClass | None, said: dict[str, str]
) -> None:
    ended = job()
    ended.retried_for, ended.failure = retried_for, failure
    with capture_logs() as logs:
        MetricsObserver(Metrics(), portal="acme").settled(ended, settled)
    [line] = [line for line in logs if line["event"] == "message.settled"]
    assert line["outcome"] == settled.value
    assert line["portal"] == "acme"
    assert {key: line[key] for key in ("reason", "error_class") if key in line} == said
