"""The Prometheus alert rules: real series, and an action for the operator in each."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.manifests import ROOT, worker_series
from tests.deploy.promql import grouping_labels, matcher_labels, metric_names

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
# Series that come from Prometheus itself, kube-state-metrics and RabbitMQ's Prometheus
# plugin (its per-object queue metrics), not the worker.
EXTERNAL = {
    "up",
    "kube_deployment_status_replicas_unavailable",
    "rabbitmq_queue_head_message_timestamp",
}
TARGET_LABELS = {"instance", "job", "namespace", "pod"}


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def rule_using(metric: str) -> dict[str, Any]:
    """The one rule that reads `metric` (a check that it is absent aside)."""
    (found,) = [
        rule
        for rule in rules()
        if metric in metric_names(rule["expr"]) and not rule["expr"].startswith("absent(")
    ]
    return found


def minutes(duration: str) -> float:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match[1]) * {"s": 1 / 60, "m": 1, "h": 60}[match[2]]


def test_every_rule_reads_real_series() -> None:
    series = worker_series()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = names - set(series) - EXTERNAL
        assert not unknown, (rule["alert"], unknown)


def test_every_label_a_rule_names_is_on_its_worker_series() -> None:
    series = worker_series()
    for rule in rules():
        names = metric_names(rule["expr"]) - EXTERNAL
        if not names:
            continue
        known = set().union(*(series[name] for name in names)) | TARGET_LABELS
        used = grouping_labels(rule["expr"]) | matcher_labels(rule["expr"])
        assert used <= known, (rule["alert"], used - known)


def test_every_rule_is_named_lasting_graded_and_explained() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert minutes(rule["for"]) >= 1, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]


def test_a_blocked_portal_alerts_after_some_minutes() -> None:
    rule = rule_using("b24_portal_up")
    assert rule["expr"] == "b24_portal_up == 0"
    assert minutes(rule["for"]) >= 2
    assert rule["labels"]["severity"] == "critical"


def test_dead_letters_operating_budget_and_rate_limits_have_rules() -> None:
    assert "error_class" in grouping_labels(rule_using("b24_failed_total")["expr"])
    budget = rule_using("b24_operating_budget_left_seconds")["expr"]
    assert re.search(r"<\s*\d+$", budget), budget
    assert "code" in grouping_labels(rule_using("b24_rate_limited_total")["expr"])


def test_the_backlog_and_the_waiting_time_have_rules() -> None:
    backlog = rule_using("b24_queue_ready")["expr"]
    assert {"queue", "portal"} <= grouping_labels(backlog)
    assert "deriv(" in backlog  # growing, not merely deep
    waited = rule_using("b24_delivery_delay_seconds_bucket")["expr"]
    assert waited.startswith("histogram_quantile(0.99,")
    assert re.search(r">\s*900$", waited), waited
    oldest = rule_using("rabbitmq_queue_head_message_timestamp")["expr"]
    assert oldest.startswith("time() - min by (queue) (")
    assert "queue" in matcher_labels(oldest)


def test_a_worker_down_or_not_ready_alerts() -> None:
    assert rule_using("up")["expr"].endswith("== 0")
    assert rule_using("kube_deployment_status_replicas_unavailable")
    assert any(rule["expr"] == "absent(b24_portal_up)" for rule in rules())


def test_open_files_alert_before_and_after_the_limit_binds() -> None:
    running_out = rule_using("b24_out_of_files_total")["expr"]
    assert "increase(" in running_out
    near = rule_using("process_open_fds")
    assert near == rule_using("process_max_fds")  # one rule: open files against their limit
    assert re.search(r"process_open_fds\{[^}]*\}\s*/\s*process_max_fds\{", near["expr"])
    assert re.search(r">\s*0\.\d+$", near["expr"]), near["expr"]
    # Other exporters' process_* series share these names: the rule reads the worker's.
    assert matcher_labels(near["expr"]) == {"job"}
    assert "instance" in grouping_labels(near["expr"])
