"""`b24-worker run` against the real broker: it starts, logs safely, stops on SIGTERM."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from typing import IO

import pytest

from worker.runtime.app import COLLECTOR_THRESHOLDS, tune_collector

WEBHOOK_CODE = "Wh00kC0de4Tests"


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )


def _event_of(line: str) -> object:
    try:
        return json.loads(line).get("event")
    except ValueError:
        return None


def read_until(stream: IO[str], event: str, timeout_s: float = 20.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if _event_of(line) == event:
            return lines
    raise AssertionError(f"no {event} line; got {lines}")


@pytest.mark.rabbitmq
def test_run_connects_and_stops_cleanly_on_sigterm(amqp_url: str) -> None:
    worker = start_worker(
        {
            "AMQP_URL": amqp_url,
            "B24_WEBHOOK_URL": f"http://127.0.0.1:8085/rest/1/{WEBHOOK_CODE}/",
            "HTTP_PORT": "0",
        }
    )
    assert worker.stdout is not None
    try:
        started = json.loads(read_until(worker.stdout, "worker.started")[-1])
        worker.send_signal(signal.SIGTERM)
        rest, _ = worker.communicate(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0
    assert started["settings"]["B24_WEBHOOK_URL"] == "http://127.0.0.1:8085/rest/1/***/"
    assert started["level"] == "info"
    assert "worker.stopped" in [_event_of(line) for line in rest.splitlines()]
    assert WEBHOOK_CODE not in json.dumps(started) + rest


def test_run_reports_an_unreachable_broker_without_its_password() -> None:
    worker = start_worker(
        {
            "AMQP_URL": "amqp://app:Br0kerPassw0rd@127.0.0.1:1/",
            "B24_WEBHOOK_URL": f"http://127.0.0.1:8085/rest/1/{WEBHOOK_CODE}/",
            "HTTP_PORT": "0",
        }
    )
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 1
    line = json.loads(output.strip().splitlines()[-1])
    assert line["event"] == "broker.unreachable"
    assert line["broker"] == "amqp://app:***@127.0.0.1:1/"
    assert "Br0kerPassw0rd" not in output


def test_run_without_a_portal_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 2
    line = json.loads(output.strip().splitlines()[-1])
    assert line["event"] == "config.no_portal"
    assert "B24_WEBHOOK_URL" in line["hint"]


def test_the_collector_is_tuned_once_start_up_is_done() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == COLLECTOR_THRESHOLDS
        assert gc.get_freeze_count() > 1000  # modules, models and settings set aside
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
