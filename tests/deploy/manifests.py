"""The deployment files as data, and the worker's own facts to hold them to."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel, SecretStr

from worker.observability.metrics import Metrics
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"


def kubernetes_documents(folder: Path = KUBERNETES) -> dict[str, list[dict[str, Any]]]:
    """Every manifest in a kustomize folder (kustomization.yaml aside), by file name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found[path.name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def kubernetes_objects(folder: Path = KUBERNETES) -> dict[str, dict[str, Any]]:
    """Every object of a folder by kind; each kind appears once."""
    objects: dict[str, dict[str, Any]] = {}
    for documents in kubernetes_documents(folder).values():
        for document in documents:
            kind = document["kind"]
            assert kind not in objects, f"two objects of kind {kind}"
            objects[kind] = document
    return objects


def kustomization(folder: Path = KUBERNETES) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return loaded


def is_secret_setting(name: str) -> bool:
    """Whether a setting holds a secret: a SecretStr, or a structure with one inside."""
    return _holds_secret(Settings.model_fields[name].annotation)


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_holds_secret(field.annotation) for field in annotation.model_fields.values())
    return any(_holds_secret(argument) for argument in typing.get_args(annotation))


def default_of(name: str) -> Any:
    return Settings.model_fields[name].get_default(call_default_factory=True)


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process given exactly `env` reads them (JSON values decoded)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


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
