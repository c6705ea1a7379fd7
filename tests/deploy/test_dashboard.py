"""The Grafana dashboard reads only series the worker exposes, and all of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.deploy.manifests import ROOT, worker_families, worker_series
from tests.deploy.promql import grouping_labels, matcher_labels, metric_names

DASHBOARD = ROOT / "deploy" / "grafana" / "b24-worker-dashboard.json"
# Labels Prometheus adds to every scraped series, and the histogram bucket bound.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "le"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries() -> list[str]:
    """Every PromQL expression of the panels, and the template variables' queries."""
    found = [target["expr"] for panel in panels() for target in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def test_every_query_reads_series_the_worker_exposes() -> None:
    series = worker_series()
    for expr in queries():
        names = metric_names(expr)
        assert names, expr
        assert names <= set(series), (expr, names - set(series))


def test_every_label_a_query_names_is_on_its_series() -> None:
    series = worker_series()
    for expr in queries():
        known = set().union(*(series[name] for name in metric_names(expr))) | TARGET_LABELS
        used = grouping_labels(expr) | matcher_labels(expr)
        assert used <= known, (expr, used - known)


def test_every_worker_metric_has_a_panel() -> None:
    used = {name for expr in queries() for name in metric_names(expr)}
    for family in worker_families():
        assert any(name.startswith(family) for name in used), family


def test_latencies_are_shown_as_p50_and_p99() -> None:
    for histogram in ("b24_api_latency_seconds_bucket", "b24_limiter_wait_seconds_bucket"):
        shown = [expr for expr in queries() if histogram in expr]
        assert any(expr.startswith("histogram_quantile(0.5,") for expr in shown), histogram
        assert any(expr.startswith("histogram_quantile(0.99,") for expr in shown), histogram


def test_failures_are_split_by_error_class() -> None:
    assert any(
        "b24_failed_total" in expr and grouping_labels(expr) == {"error_class"}
        for expr in queries()
    )


def test_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    assert dashboard()["uid"]
    names = {variable["name"] for variable in dashboard()["templating"]["list"]}
    for panel in panels():
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["description"], panel["title"]
    assert {"datasource", "instance"} <= names
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}", variable["name"]
