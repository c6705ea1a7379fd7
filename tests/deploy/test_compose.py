"""docker-compose.yml: the demo's start order, its worker's settings, the shared limiter."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.manifests import ROOT, settings_from_env

COMPOSE = ROOT / "docker-compose.yml"
# What an x-consistent-hash exchange, and so SHARDS > 0, needs on the broker.
HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"


def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def waits_for(service: str) -> dict[str, str]:
    """The services `service` starts after, with the condition it waits for."""
    depends = services()[service].get("depends_on", {})
    return {name: condition["condition"] for name, condition in depends.items()}


def mounted(service: str, target: str) -> Path:
    """The file of this repository mounted at `target` in `service`."""
    volumes: list[str] = services()[service].get("volumes", [])
    for volume in volumes:
        source, mount, *_ = volume.split(":")
        if mount == target:
            return ROOT / source
    raise AssertionError(f"nothing is mounted at {target} in {service}")


def enabled_plugins() -> set[str]:
    """The plugins of RabbitMQ's enabled_plugins file, an Erlang list ending with a period."""
    text = mounted("rabbitmq", "/etc/rabbitmq/enabled_plugins").read_text().strip()
    match = re.fullmatch(r"\[([a-z0-9_,\s]*)\]\.", text)
    assert match, text
    return {name.strip() for name in match[1].split(",") if name.strip()}


def test_every_service_with_dependants_reports_its_health() -> None:
    for name in services():
        for dependency, condition in waits_for(name).items():
            assert condition == "service_healthy", (name, dependency)
            assert services()[dependency]["healthcheck"]["test"], dependency


def test_the_producer_publishes_once_the_worker_is_ready() -> None:
    assert waits_for("producer") == {"rabbitmq": "service_healthy", "worker": "service_healthy"}
    assert "/readyz" in " ".join(services()["worker"]["healthcheck"]["test"])
    assert services()["producer"]["restart"] == "no"


def test_the_worker_starts_after_the_broker_the_portal_and_redis() -> None:
    assert set(waits_for("worker")) == {"rabbitmq", "sandbox", "redis"}


def test_a_worker_that_exits_by_itself_is_started_again() -> None:
    assert services()["worker"]["restart"] == "unless-stopped"


def test_the_worker_paces_through_the_shared_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(services()["worker"]["environment"], monkeypatch)
    limiter_url = urlsplit(settings.LIMITER_URL.get_secret_value())
    assert limiter_url.scheme == "redis"
    assert limiter_url.hostname == "redis"
    assert services()["redis"]["image"].startswith("redis:")
    assert "redis-cli" in services()["redis"]["healthcheck"]["test"]
    assert settings.has_portal


def test_the_broker_keeps_its_plugins_and_has_the_consistent_hash_exchange() -> None:
    """The mounted file replaces the image's list, so it must name the image's plugins too."""
    assert {"rabbitmq_management", "rabbitmq_prometheus", HASH_PLUGIN} <= enabled_plugins()
    assert "15672:15672" in services()["rabbitmq"]["ports"]
