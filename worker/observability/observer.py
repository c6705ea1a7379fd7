"""The lane's observer as the worker runs it: Prometheus metrics and JSON log lines.

One `MetricsObserver` per portal (and one for what the router ends before any
portal); each knows its portal's key, so a per-portal label or log field is
added here and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from worker.amqp.deliveries import Source
from worker.flow.jobs import Job
from worker.flow.outcomes import Settled
from worker.observability.metrics import Metrics

__all__ = ["MetricsObserver"]

log = structlog.get_logger("worker.observability.observer")


class MetricsObserver:
    """Counts a lane's commands in the worker's metrics and logs their ends."""

    def __init__(self, metrics: Metrics, *, portal: str | None) -> None:
        self._metrics = metrics
        self._portal = portal
        self._label = portal or ""
        self._log = log.bind(portal=portal)
        if portal is not None:
            metrics.portal_up.labels(portal).set(1)

    def consumed(self, source: Source, published_at: datetime | None = None) -> None:
        self._metrics.consumed.labels(source, self._label).inc()
        if published_at is not None and source != "retry":
            # Whole seconds (AMQP's timestamp), and the two hosts' clocks apart.
            delay = (datetime.now(UTC) - published_at).total_seconds()
            self._metrics.delivery_delay.observe(max(delay, 0.0))

    def settled(self, job: Job, settled: Settled) -> None:
        m = self._metrics
        match settled:
            case Settled.SUCCEEDED:
                m.succeeded.labels(self._label).inc()
            case Settled.FAILED:
                error_class = job.failure.value if job.failure else "unknown"
                m.failed.labels(error_class, self._label).inc()
            case Settled.RETRIED:
                m.retried.labels(self._label).inc()
            case Settled.HANDED_BACK:
                m.handed_back.labels(self._label).inc()
            case Settled.CRASHED:
                pass  # logged where it crashed; the broker delivers it again
        # Why a copy went to a delay tier is said here only: the copy carries no
        # reason, and a failure event names the last one alone. A failure's class
        # is in its event too, but a log read alone should tell it.
        why: dict[str, str | None] = {}
        if settled is Settled.RETRIED:
            why["reason"] = job.retried_for
        elif settled is Settled.FAILED:
            why["error_class"] = job.failure.value if job.failure else None
        log.info(
            "message.settled",
            message_id=job.message_id,
            portal=self._portal,
            item=job.key,
            outcome=settled.value,
            attempts=job.attempts,
            **why,
        )

    def waited(self, seconds: float) -> None:
        self._metrics.limiter_wait.observe(seconds)
        self._metrics.limiter_waited.labels(self._label).inc(seconds)

    def sending(self, commands: int) -> None:
        self._metrics.batch_size.observe(commands)

    def coalesced(self, commands: int) -> None:
        self._metrics.coalesced.labels(self._label).inc(commands)

    def answered(self, seconds: float) -> None:
        self._metrics.api_latency.observe(seconds)

    def out_of_files(self) -> None:
        self._metrics.out_of_files.labels(self._label).inc()

    def rate_limited(self, code: str) -> None:
        self._metrics.rate_limited.labels(code, self._label).inc()
        self._log.warning("call.rate_limited", code=code, note="the command waits and goes again")

    def budget_left(self, method: str, seconds: float) -> None:
        self._metrics.operating_left.labels(method, self._label).set(seconds)

    def portal_down(self, state: str, code: str) -> None:
        self._log.error(
            "portal.down",
            state=state,
            code=code,
            note="sending and consuming stop; commands wait in order until the portal answers",
        )
        self._metrics.portal_up.labels(self._label).set(0)

    def portal_up(self) -> None:
        self._metrics.portal_up.labels(self._label).set(1)
