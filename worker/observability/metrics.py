"""The worker's Prometheus metrics, in one registry per worker (tests build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "b24_consumed", "deliveries taken from the queues", ["source"], registry=r
        )
        self.succeeded = Counter("b24_succeeded", "commands the portal applied", registry=r)
        self.failed = Counter(
            "b24_failed", "commands ended with a failure event", ["error_class"], registry=r
        )
        self.retried = Counter("b24_retried", "commands sent to a delay tier", registry=r)
        self.handed_back = Counter(
            "b24_handed_back", "deliveries returned to the broker", registry=r
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
        self.api_latency = Histogram(
            "b24_api_latency_seconds",
            "portal call duration",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.rate_limited = Counter(
            "b24_rate_limited", "rate-limit answers from the portal", ["code"], registry=r
        )
        self.operating_left = Gauge(
            "b24_operating_budget_left_seconds",
            "operating seconds left in the window",
            ["method"],
            registry=r,
        )
        self.portal_up = Gauge(
            "b24_portal_up", "1 when the portal answers, 0 when portal-wide down", registry=r
        )
        self.portal_up.set(1)
        self._down: set[str] = set()

    def portal_went_down(self, portal: str) -> None:
        self._down.add(portal)
        self.portal_up.set(0)

    def portal_came_up(self, portal: str) -> None:
        """``portal_up`` goes back to 1 once no portal of the worker is down."""
        self._down.discard(portal)
        if not self._down:
            self.portal_up.set(1)
