"""docs/operations.md names only settings, codes, metrics and alerts that exist."""

from __future__ import annotations

import re

import yaml

from tests.deploy.manifests import ROOT, worker_families, worker_series
from worker.flow.classify import classify
from worker.settings import Settings

DOC = ROOT / "docs" / "operations.md"
CAPITALS = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?:_\*)?")


def doc() -> str:
    return DOC.read_text()


def quoted() -> list[str]:
    """The text of every `code span` of the document."""
    return re.findall(r"`([^`\n]+)`", doc())


def test_every_metric_is_listed() -> None:
    series = set(worker_series())
    listed = {re.sub(r"\{.*\}$", "", span) for span in quoted()}
    for family in worker_families():
        exposed = f"{family}_total" if f"{family}_total" in series else family
        assert exposed in listed, exposed


# RabbitMQ's own environment variables, named where the doc runs a cluster by hand, and
# OpenTelemetry's, which configure tracing ("Tracing").
RABBITMQ_VARIABLES = re.compile(r"^(RABBITMQ|ERL|OTEL)_[A-Z_]+(?:_\*)?$")


def test_every_capitalised_name_is_a_setting_or_a_portal_code() -> None:
    unknown_code = classify("NOT_A_CODE_ANYONE_SENDS", None)
    for span in quoted():
        for name in CAPITALS.findall(span):
            if RABBITMQ_VARIABLES.match(name):
                assert name not in Settings.model_fields, name
            elif name.endswith("_*"):
                prefix = name[:-1]
                assert any(field.startswith(prefix) for field in Settings.model_fields), name
            elif name != "CHANGE_ME":
                assert name in Settings.model_fields or classify(name, None) != unknown_code, name


def test_the_alert_table_matches_the_rules() -> None:
    loaded = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    alerts = {rule["alert"] for group in loaded["groups"] for rule in group["rules"]}
    rows = set(re.findall(r"^\| `(B24\w+)` \|", doc(), flags=re.MULTILINE))
    assert rows == alerts


def test_the_compose_table_matches_the_services() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    section = doc().split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z]+)` \|", section, flags=re.MULTILINE))
    assert rows == set(services)


def test_the_readiness_reasons_are_the_worker_s_own() -> None:
    source = (ROOT / "worker" / "runtime" / "readiness.py").read_text()
    (row,) = [line for line in doc().splitlines() if line.startswith("| `/readyz` |")]
    reasons = re.findall(r"`([a-z][a-z :]+)(?:<state>)?`", row.split("`reason`:", 1)[1])
    assert len(reasons) == 3, reasons
    for reason in reasons:
        assert f'"{reason}' in source, reason
