"""The deployment files as data, and the worker's own facts to hold them to."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr

from worker.observability.metrics import Metrics
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"


def kubernetes_documents() -> dict[str, list[dict[str, Any]]]:
    """Every manifest under deploy/kubernetes (kustomization.yaml aside), by file name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found[path.name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def kubernetes_objects() -> dict[str, dict[str, Any]]:
    """Every object by kind; each kind appears once."""
    objects: dict[str, dict[str, Any]] = {}
    for documents in kubernetes_documents().values():
        for document in documents:
            kind = document["kind"]
            assert kind not in objects, f"two objects of kind {kind}"
            objects[kind] = document
    return objects


def is_secret_setting(name: str) -> bool:
    annotation = Settings.model_fields[name].annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def default_of(name: str) -> Any:
    return Settings.model_fields[name].default


def worker_series() -> dict[str, set[str]]:
    """Every sample name the worker exposes on /metrics, with its label names.

    Labelled metrics expose nothing until a child exists, so one is made for each.
    """
    metrics = Metrics()
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase) and collector._labelnames:
            collector.labels(*("x" for _ in collector._labelnames))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def worker_families() -> set[str]:
    """The metric names the worker declares (without _total, _bucket...)."""
    return {family.name for family in Metrics().registry.collect()}
