"""The worker's metrics: a dropped portal takes every series labelled with it along; the
process's open files are exposed against their limit."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read from /proc")
def test_the_process_open_files_are_exposed_against_their_limit(tmp_path: Path) -> None:
    metrics = Metrics()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert metrics.total("process_max_fds") == soft
    before = metrics.total("process_open_fds")
    files = [(tmp_path / f"f{n}").open("w") for n in range(3)]
    try:
        assert metrics.total("process_open_fds") == before + 3
    finally:
        for file in files:
            file.close()
    assert metrics.total("process_open_fds") == before
    assert metrics.total("process_resident_memory_bytes") > 0
