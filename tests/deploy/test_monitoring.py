"""deploy/kubernetes/monitoring: the Prometheus Operator's ServiceMonitor and
PrometheusRule, pointing at what the worker's manifests really expose."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.deploy.manifests import KUBERNETES, ROOT, kubernetes_objects, kustomization

MONITORING = KUBERNETES / "monitoring"


def test_the_component_lists_its_two_manifests() -> None:
    component = kustomization(MONITORING)
    assert component["kind"] == "Component"
    assert sorted(component["resources"]) == ["prometheusrule.yaml", "servicemonitor.yaml"]
    assert set(kubernetes_objects(MONITORING)) == {"ServiceMonitor", "PrometheusRule"}


def test_the_service_monitor_scrapes_the_workers_metrics_port() -> None:
    monitor = kubernetes_objects(MONITORING)["ServiceMonitor"]
    service = kubernetes_objects()["Service"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The alert rules name the job by the Service's name, as a ServiceMonitor labels it.
    assert service["metadata"]["name"] == "b24-worker"
    assert 'up{job="b24-worker"}' in (ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text()


def test_the_prometheus_rule_carries_the_rule_files_groups_unchanged() -> None:
    rule = kubernetes_objects(MONITORING)["PrometheusRule"]
    plain = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == plain["groups"]
    checked = subprocess.run(
        [sys.executable, "scripts/prometheus_rule.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_neither_names_a_namespace() -> None:
    for kind, manifest in kubernetes_objects(MONITORING).items():
        assert "namespace" not in manifest["metadata"], kind
