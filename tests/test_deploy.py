"""docker-compose.yml and the Dockerfile, checked as text (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_the_broker_the_sandbox_and_the_worker() -> None:
    services = compose()["services"]
    assert set(services) >= {"rabbitmq", "sandbox", "worker"}
    assert "management" in services["rabbitmq"]["image"]
    for name in ("sandbox", "worker"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["sandbox"]["command"][0] == "sandbox"
    assert services["worker"]["command"] == ["run"]


def test_the_worker_waits_for_healthy_dependencies_and_points_at_them() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "sandbox": {"condition": "service_healthy"},
    }
    for name in ("rabbitmq", "sandbox"):
        assert services[name]["healthcheck"]["test"]
    env = worker["environment"]
    assert env["AMQP_URL"].endswith("@rabbitmq:5672/")
    assert env["B24_WEBHOOK_URL"].startswith("http://sandbox:8085/rest/")
    assert env["B24_ALLOW_HTTP"] == "true"  # plain http to a host that is not loopback


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(
        line.startswith("HEALTHCHECK ") and "/healthz" in line + "".join(lines) for line in lines
    )
