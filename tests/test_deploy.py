"""docker-compose.yml and the Dockerfile, checked as text (no Docker engine runs here)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from sandbox.cli import add_arguments
from worker.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def dockerfile_stages() -> list[list[str]]:
    """The instructions of each stage (the global ARGs before the first FROM left out)."""
    stages: list[list[str]] = []
    for line in dockerfile_lines():
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_compose_runs_the_broker_the_sandbox_the_worker_and_a_producer() -> None:
    services = compose()["services"]
    assert set(services) == {"rabbitmq", "redis", "sandbox", "worker", "producer"}
    assert "management" in services["rabbitmq"]["image"]
    assert "15672:15672" in services["rabbitmq"]["ports"]
    for name in ("sandbox", "worker", "producer"):
        assert services[name]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert services["sandbox"]["command"][0] == "sandbox"
    assert services["worker"]["command"] == ["run"]


def test_the_worker_waits_for_healthy_dependencies_and_points_at_them() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "sandbox": {"condition": "service_healthy"},
    }
    for name in ("rabbitmq", "redis", "sandbox"):
        assert services[name]["healthcheck"]["test"]
    env = worker["environment"]
    assert env["AMQP_URL"].endswith("@rabbitmq:5672/")
    assert env["LIMITER_URL"] == "redis://redis:6379/0"  # the shared limiter, as in production
    assert env["B24_WEBHOOK_URL"].startswith("http://sandbox:8085/rest/")
    assert env["B24_ALLOW_HTTP"] == "true"  # plain http to a host that is not loopback


def test_the_worker_is_healthy_only_when_ready_on_its_http_port() -> None:
    worker = compose()["services"]["worker"]
    check = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{worker['environment']['HTTP_PORT']}/readyz" in check
    assert f"{worker['environment']['HTTP_PORT']}:" in worker["ports"][0]


def test_the_producer_publishes_a_sample_file_once_the_worker_is_ready() -> None:
    producer = compose()["services"]["producer"]
    command = producer["command"]
    assert command[0] == "publish"
    assert command[-1] == "--wait"
    (sample,) = command[1:-1]
    assert sample.startswith("examples/")
    assert (ROOT / sample).is_file()
    assert producer["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "worker": {"condition": "service_healthy"},
    }
    assert (
        producer["environment"]["AMQP_URL"]
        == compose()["services"]["worker"]["environment"]["AMQP_URL"]
    )
    assert producer["restart"] == "no"  # one-shot: it exits when the samples are settled


def test_the_sandbox_holds_every_item_the_producer_updates() -> None:
    """Seeded items are numbered from 1 per entity type; a missing one ends as not_found."""
    services = compose()["services"]
    sandbox = services["sandbox"]["command"]
    seed = int(sandbox[sandbox.index("--seed") + 1])
    sample = ROOT / services["producer"]["command"][1]
    ids = [json.loads(line)["id"] for line in sample.read_text().splitlines() if line.strip()]
    assert ids
    assert max(ids) <= seed


def test_every_compose_command_is_one_the_cli_knows() -> None:
    """Each service's command parses: `sandbox` by the sandbox's own parser, which
    `b24-worker sandbox` hands its arguments to, every other by the worker's."""
    parser = build_parser()
    sandbox = argparse.ArgumentParser(prog="b24-worker sandbox")
    add_arguments(sandbox)
    commands = [s["command"] for s in compose()["services"].values() if "command" in s]
    assert {command[0] for command in commands} == {"sandbox", "run", "publish"}
    for command in commands:
        if command[0] == "sandbox":
            sandbox.parse_args(command[1:])  # exits (SystemExit) on an unknown option
        else:
            parser.parse_args(command)


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert users[-1].isdigit()  # numeric, so Kubernetes' runAsNonRoot can verify it
    (healthcheck,) = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "/healthz" in healthcheck
    assert "HTTP_PORT" in healthcheck
    assert any(line.startswith("COPY --from=") for line in final)


def test_the_image_carries_the_examples_in_its_working_directory() -> None:
    final = dockerfile_stages()[-1]
    workdirs = [line.split()[1] for line in final if line.startswith("WORKDIR ")]
    copies = [line.split()[1:] for line in final if line.startswith("COPY ")]
    assert ["examples", "./examples"] in copies
    assert workdirs
    assert final.index(f"WORKDIR {workdirs[-1]}") < final.index("COPY examples ./examples")
    assert final[-1] == 'CMD ["run"]'
    assert 'ENTRYPOINT ["b24-worker"]' in final
