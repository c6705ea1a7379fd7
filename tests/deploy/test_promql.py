"""The PromQL reader the dashboard and alert tests rely on."""

from __future__ import annotations

from tests.deploy.promql import grouping_labels, matcher_labels, metric_names

QUANTILE = (
    'histogram_quantile(0.99, sum by (le) (rate(b24_api_latency_seconds_bucket{instance=~"$i"}'
    "[$__rate_interval]))) / 1e3"
)


def test_names_come_out_without_functions_labels_ranges_or_numbers() -> None:
    assert metric_names(QUANTILE) == {"b24_api_latency_seconds_bucket"}
    assert metric_names('up{job="b24-worker"} == 0 or absent(b24_portal_up)') == {
        "up",
        "b24_portal_up",
    }


def test_label_values_names_its_metric_and_its_label() -> None:
    query = "label_values(b24_portal_up, instance)"
    assert metric_names(query) == {"b24_portal_up"}
    assert grouping_labels(query) == {"instance"}


def test_labels_come_from_groupings_and_matchers() -> None:
    assert grouping_labels(QUANTILE) == {"le"}
    assert matcher_labels(QUANTILE) == {"instance"}
    expr = 'sum by (code, instance) (rate(b24_rate_limited_total{code!="x",job=~"w"}[5m]))'
    assert grouping_labels(expr) == {"code", "instance"}
    assert matcher_labels(expr) == {"code", "job"}
