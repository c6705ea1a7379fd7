"""`b24-worker run` against the real broker: it starts, logs safely, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO

import pytest

from tests.env import clean_env
from tests.worker.broker import connected, unique_topology
from worker.amqp.topology import Topology
from worker.cli import main
from worker.runtime.app import COLLECTOR_THRESHOLDS, tune_collector

WEBHOOK_CODE = "Wh00kC0de4Tests"


def start_worker(env: dict[str, str], *, code: str | None = None) -> subprocess.Popen[str]:
    """`b24-worker run`, or ``code`` (which runs it after patching something)."""
    return subprocess.Popen(
        [sys.executable, "-c", code] if code else [sys.executable, "-m", "worker", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(**env),
    )


def on_broker(amqp_url: str, topology: Topology) -> dict[str, str]:
    """A worker's environment on the broker at ``amqp_url``, with ``topology``'s queues."""
    return {
        "AMQP_URL": amqp_url,
        "B24_WEBHOOK_URL": f"http://127.0.0.1:8085/rest/1/{WEBHOOK_CODE}/",
        "UPDATE_QUEUE": topology.update_queue,
        "RESULT_QUEUE": topology.result_queue,
        "DEAD_LETTER_QUEUE": topology.dead_letter_queue,
        "RETRY_DELAYS_S": ",".join(str(s) for s in topology.retry_delays_s),
        "HTTP_PORT": "0",
    }


def _event_of(line: str) -> object:
    try:
        return json.loads(line).get("event")
    except ValueError:
        return None


class Lines:
    """A process's output, line by line, read by a thread of its own: a wait for a line
    ends at its deadline even while the process prints nothing."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, event: str, timeout_s: float = 20.0) -> list[str]:
        """The lines up to the first one of ``event``; AssertionError at the deadline."""
        got: list[str] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            got.append(line)
            if _event_of(line) == event:
                return got
        raise AssertionError(f"no {event} line in {timeout_s} s; got {got}")

    def rest(self, timeout_s: float = 20.0) -> str:
        """Everything printed until the output ends."""
        got: list[str] = []
        while (line := self._lines.get(timeout=timeout_s)) is not None:
            got.append(line)
        return "".join(got)


@pytest.mark.rabbitmq
async def test_run_connects_and_stops_cleanly_on_sigterm(amqp_url: str) -> None:
    topology = unique_topology()
    async with connected(amqp_url, topology):  # its queues are deleted afterwards
        worker = start_worker(on_broker(amqp_url, topology))
        assert worker.stdout is not None
        output = Lines(worker.stdout)
        try:
            upto = await asyncio.to_thread(output.until, "worker.started")
            started = json.loads(upto[-1])
            worker.send_signal(signal.SIGTERM)
            rest = await asyncio.to_thread(output.rest)
            await asyncio.to_thread(worker.wait, 20)
        finally:
            worker.kill()
    assert worker.returncode == 0
    assert started["settings"]["B24_WEBHOOK_URL"] == "http://127.0.0.1:8085/rest/1/***/"
    assert started["level"] == "info"
    assert "worker.stopped" in [_event_of(line) for line in rest.splitlines()]
    assert WEBHOOK_CODE not in json.dumps(started) + rest


@pytest.mark.rabbitmq
async def test_a_start_the_broker_breaks_off_is_made_again(amqp_url: str) -> None:
    """RabbitMQ 3.10 closes the connection with 541 INTERNAL_ERROR when a consumer
    registers on a quorum queue a replica has just declared, before the queue's
    process runs: the worker starts again instead of exiting."""
    topology = unique_topology()
    code = (
        "import aiormq.exceptions\n"
        "import worker.runtime.app as app\n"
        "started = app.Worker.start\n"
        "tries = []\n"
        "async def start(self):\n"
        "    tries.append(self)\n"
        "    await started(self)\n"
        "    if len(tries) == 1:\n"
        "        raise aiormq.exceptions.ConnectionInternalError('INTERNAL_ERROR')\n"
        "app.Worker.start = start\n"
        "from worker.cli import main\n"
        "raise SystemExit(main(['run']))\n"
    )
    async with connected(amqp_url, topology):  # its queues are deleted afterwards
        worker = start_worker(on_broker(amqp_url, topology), code=code)
        assert worker.stdout is not None
        output = Lines(worker.stdout)
        try:
            upto = await asyncio.to_thread(output.until, "worker.started")
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(output.rest)
            await asyncio.to_thread(worker.wait, 20)
        finally:
            worker.kill()
    assert worker.returncode == 0
    events = [json.loads(line) for line in upto if _event_of(line) is not None]
    [interrupted] = [e for e in events if e["event"] == "broker.start_interrupted"]
    assert interrupted["level"] == "warning"
    assert interrupted["error"] == "INTERNAL_ERROR"
    # Connected twice: the first worker was drained, a second one started.
    assert [e["event"] for e in events].count("broker.connected") == 2


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


def test_run_logs_any_other_failure_of_its_start_as_one_masked_line() -> None:
    """A start that fails for a reason the worker does not name still ends with one
    JSON line (log pipelines read nothing else) and exit code 1."""
    code = (
        "import worker.runtime.app as app\n"
        "async def fail(self):\n"
        f"    raise RuntimeError('no start for http://127.0.0.1:8085/rest/1/{WEBHOOK_CODE}/')\n"
        "app.Worker.start = fail\n"
        "from worker.cli import main\n"
        "raise SystemExit(main(['run']))\n"
    )
    worker = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(
            B24_WEBHOOK_URL=f"http://127.0.0.1:8085/rest/1/{WEBHOOK_CODE}/", HTTP_PORT="0"
        ),
    )
    assert worker.returncode == 1
    assert worker.stderr == ""
    line = json.loads(worker.stdout.strip().splitlines()[-1])
    assert (line["event"], line["level"], line["error"]) == (
        "worker.start_failed",
        "error",
        "RuntimeError",
    )
    assert "RuntimeError: no start for http://127.0.0.1:8085/rest/1/***/" in line["exception"]
    assert WEBHOOK_CODE not in worker.stdout


@pytest.mark.rabbitmq
def test_run_names_what_the_broker_refused(amqp_url: str) -> None:
    """Not "unreachable": the broker answered, and its reply says what it refused."""
    worker = start_worker(
        {
            "AMQP_URL": amqp_url,
            "B24_WEBHOOK_URL": f"http://127.0.0.1:8085/rest/1/{WEBHOOK_CODE}/",
            "HTTP_PORT": "0",
            # Names the broker keeps for itself: refused, so nothing is declared.
            "UPDATE_QUEUE": "amq.b24-test.update",
            "RESULT_QUEUE": "amq.b24-test.result",
            "DEAD_LETTER_QUEUE": "amq.b24-test.dead",
        }
    )
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 1
    line = json.loads(output.strip().splitlines()[-1])
    assert line["event"] == "broker.access_refused"
    assert line["error"].startswith("ACCESS_REFUSED - queue name 'amq.b24-test.")
    assert "reserved prefix 'amq.*'" in line["error"]
    assert WEBHOOK_CODE not in output


def test_run_without_a_portal_says_what_to_set() -> None:
    env = clean_env()
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


def test_a_collector_kept_off_through_start_up_is_turned_back_on() -> None:
    before = gc.get_threshold()
    gc.disable()
    try:
        tune_collector()
        assert gc.isenabled()
        assert gc.get_threshold() == COLLECTOR_THRESHOLDS
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*before)


def test_run_turns_the_collector_back_on_when_it_cannot_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("B24_PORTALS", "{not json")
    assert main(["run"]) == 2
    assert "B24_PORTALS" in capsys.readouterr().err
    assert gc.isenabled()


def test_the_command_line_leaves_the_contract_and_settings_to_run() -> None:
    """`run` imports the contract and the settings with the collector off (what that
    saves is in cli._run); the command line importing them first would undo it."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, worker.cli; "
            "print(' '.join(m for m in ('schemas', 'worker.settings', 'pydantic') "
            "if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    assert loaded.stdout.split() == []
