"""The command line: options, environment variables, the start banner, serving until SIGTERM."""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from sandbox.cli import add_arguments, announce, config_from_args
from sandbox.config import DEFAULT_CUSTOM_FIELDS, SandboxConfig
from sandbox.limits import OperatingCost


def parse(argv: list[str]) -> SandboxConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_defaults_are_the_clouds() -> None:
    config = parse([])
    assert (config.rate_burst, config.rate_per_second) == (50, 2.0)
    assert (config.operating_limit_s, config.operating_window_s) == (480.0, 600.0)
    assert config.limits_enabled is True
    assert config.custom_fields == DEFAULT_CUSTOM_FIELDS


def test_options_reach_the_config() -> None:
    config = parse(
        [
            "--port=9000",
            "--no-limits",
            "--seed=4",
            "--spa-types=128,1040",
            "--operating-cost=crm.item.update=3.2",
            "--custom-field=2:UF_CRM_555:double:required",
            "--no-default-custom-fields",
            "--latency-ms=20",
        ]
    )
    assert (config.port, config.limits_enabled, config.seed_items) == (9000, False, 4)
    assert config.spa_types == (128, 1040)
    assert config.cost_of("crm.item.update") == OperatingCost.fixed(3.2)
    assert config.cost_of("crm.item.get") == OperatingCost.fixed(config.operating_cost_s)
    assert [(f.entity_type_id, f.code, f.required) for f in config.custom_fields] == [
        (2, "UF_CRM_555", True)
    ]
    assert config.latency_ms == 20


def test_an_operating_cost_may_be_a_range_drawn_per_call() -> None:
    config = parse(["--operating-cost=crm.item.update=0.05-0.8", "--random-seed=4"])
    assert config.cost_of("crm.item.update") == OperatingCost(0.05, 0.8)
    assert config.random_seed == 4
    with pytest.raises(ValueError, match="LOW-HIGH"):
        parse(["--operating-cost=crm.item.update=slow"])


def test_batch_charging_is_nested_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([]).batch_charging == "nested"
    assert parse(["--batch-charging=batch"]).batch_charging == "batch"
    monkeypatch.setenv("SANDBOX_BATCH_CHARGING", "batch")
    assert parse([]).batch_charging == "batch"
    assert parse(["--batch-charging", "nested"]).batch_charging == "nested"
    with pytest.raises(SystemExit):
        parse(["--batch-charging=method"])
    with pytest.raises(ValueError, match="batch_charging"):
        SandboxConfig(batch_charging="method")  # type: ignore[arg-type]
    out = io.StringIO()
    announce(SandboxConfig(batch_charging="batch"), out)
    assert "a batch charged to the method batch" in out.getvalue()


def test_fm_ids_are_honoured_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([]).fm_ids == "honoured"
    assert parse(["--fm-ids=ignored"]).fm_ids == "ignored"
    monkeypatch.setenv("SANDBOX_FM_IDS", "ignored")
    assert parse([]).fm_ids == "ignored"
    with pytest.raises(SystemExit):
        parse(["--fm-ids=sometimes"])
    with pytest.raises(ValueError, match="fm_ids"):
        SandboxConfig(fm_ids="sometimes")  # type: ignore[arg-type]


def test_environment_variables_are_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_RATE_BURST", "250")
    monkeypatch.setenv("SANDBOX_NO_LIMITS", "true")
    monkeypatch.setenv("SANDBOX_WEBHOOK_CODE", "fromenv")
    config = parse([])
    assert (config.rate_burst, config.limits_enabled, config.webhook_code) == (
        250,
        False,
        "fromenv",
    )
    assert parse(["--rate-burst=5"]).rate_burst == 5


def test_banner_shows_the_default_code_but_masks_a_chosen_one() -> None:
    out = io.StringIO()
    announce(SandboxConfig(), out)
    assert "/rest/1/sandboxwebhook01/" in out.getvalue()
    out = io.StringIO()
    announce(SandboxConfig(webhook_code="s3cr3tc0de"), out)
    assert "s3cr3tc0de" not in out.getvalue()
    assert "/rest/1/***/" in out.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.sandbox
def test_python_dash_m_sandbox_serves_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", f"--port={port}", "--seed=1"],
        stdout=subprocess.PIPE,
        text=True,
        # Without SANDBOX_* settings from outside: the options are the test's.
        env={k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner
        url = f"http://127.0.0.1:{port}/rest/1/sandboxwebhook01/crm.item.get"
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.post(url, json={"entityTypeId": 2, "id": 1})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.json()["result"]["item"]["title"] == "Deal #1"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0
