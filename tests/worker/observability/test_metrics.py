"""The worker's metrics: a dropped portal takes every series labelled with it along."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

from worker.observability.metrics import Metrics


def test_forgetting_a_portal_removes_each_of_its_series_and_keeps_the_others() -> None:
    metrics = Metrics()
    labelled = [
        collector
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase) and "portal" in collector._labelnames
    ]
    assert len(labelled) >= 10
    for collector in labelled:
        for portal in ("gone", "kept"):
            names = collector._labelnames
            collector.labels(*(portal if name == "portal" else "x" for name in names))
    metrics.forget_portal("gone")
    left = {
        (family.name, sample.labels["portal"])
        for family in metrics.registry.collect()
        for sample in family.samples
        if "portal" in sample.labels
    }
    assert {portal for _, portal in left} == {"kept"}
    assert len(left) == len(labelled)  # every metric still has the other portal's series
