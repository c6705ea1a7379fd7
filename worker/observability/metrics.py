"""The worker's Prometheus metrics, in one registry per worker (tests build several).

Counters and gauges carry a `portal` label (the portal's key; empty for what
ends before any portal, such as a command naming an unknown one), bounded by
the configuration. Histograms carry none: a bucket series per portal would
multiply the series by the portals.

The registry also carries the client library's process collector (Linux): the
standard `process_*` series, read from /proc at each scrape. Open files
against their limit is what tells an operator of many portals, before any call
waits for a descriptor, that the limit is about to bind.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.consumed = Counter(
            "b24_consumed", "deliveries taken from the queues", ["source", "portal"], registry=r
        )
        self.succeeded = Counter(
            "b24_succeeded", "commands the portal applied", ["portal"], registry=r
        )
        self.failed = Counter(
            "b24_failed",
            "commands ended with a failure event",
            ["error_class", "portal"],
            registry=r,
        )
        self.retried = Counter(
            "b24_retried", "commands sent to a delay tier", ["portal"], registry=r
        )
        self.handed_back = Counter(
            "b24_handed_back", "deliveries returned to the broker", ["portal"], registry=r
        )
        self.delivery_delay = Histogram(
            "b24_delivery_delay_seconds",
            "from a command's publish (its AMQP timestamp, whole seconds) to its delivery "
            "to the worker; commands without a timestamp, and retry copies, are not counted",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400),
            registry=r,
        )
        self.coalesced = Counter(
            "b24_coalesced",
            "commands applied in one call together with others of their item (COALESCE=safe)",
            ["portal"],
            registry=r,
        )
        self.batch_size = Histogram(
            "b24_batch_size", "commands per call", buckets=(1, 2, 5, 10, 20, 30, 40, 50), registry=r
        )
        self.limiter_wait = Histogram(
            "b24_limiter_wait_seconds",
            "time waiting for the limiter before a call",
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.limiter_waited = Counter(
            "b24_limiter_waited_seconds",
            "seconds calls waited for the portal's bucket and budget, in all",
            ["portal"],
            registry=r,
        )
        self.api_latency = Histogram(
            "b24_api_latency_seconds",
            "portal call duration",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.rate_limited = Counter(
            "b24_rate_limited", "rate-limit answers from the portal", ["code", "portal"], registry=r
        )
        self.out_of_files = Counter(
            "b24_out_of_files",
            "calls that could not open a connection for want of a file descriptor "
            "(their commands waited and went again)",
            ["portal"],
            registry=r,
        )
        self.operating_left = Gauge(
            "b24_operating_budget_left_seconds",
            "operating seconds left in the window",
            ["method", "portal"],
            registry=r,
        )
        self.queue_ready = Gauge(
            "b24_queue_ready",
            "commands waiting in a work queue, not yet delivered (read every 15 s)",
            ["queue", "portal"],
            registry=r,
        )
        self.token_renewal_failed = Gauge(
            "b24_token_renewal_failed",
            "1 when the portal's OAuth refresh token could not be renewed at the last try",
            ["portal"],
            registry=r,
        )
        self.portal_up = Gauge(
            "b24_portal_up",
            "1 when the portal answers, 0 while it is in a portal-wide state",
            ["portal"],
            registry=r,
        )

    def forget_portal(self, portal: str) -> None:
        """Remove every series labelled with ``portal`` (it is served no more)."""
        self._forget(portal, (*self._of_a_lane(), self.queue_ready, self.token_renewal_failed))

    def forget_lane(self, portal: str) -> None:
        """Remove the series of ``portal``'s lane (dropped while idle): not its queue's,
        nor whether its token could be renewed, which go on without a lane."""
        self._forget(portal, self._of_a_lane())

    def _of_a_lane(self) -> tuple[Counter | Gauge, ...]:
        return (
            self.consumed,
            self.succeeded,
            self.failed,
            self.retried,
            self.handed_back,
            self.coalesced,
            self.limiter_waited,
            self.rate_limited,
            self.out_of_files,
            self.operating_left,
            self.portal_up,
        )

    @staticmethod
    def _forget(portal: str, labelled: tuple[Counter | Gauge, ...]) -> None:
        for metric in labelled:
            found = {
                tuple(sample.labels.values())
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("portal") == portal
            }
            for values in found:
                metric.remove(*values)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` (``b24_succeeded_total``) whose labels
        include ``labels``, over every other label."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )
