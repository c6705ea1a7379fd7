"""Real processes for the crash scenarios: the sandbox portal and the worker as
users run them (`python -m worker sandbox`, `python -m worker run`), each
stopped by its own PID, and the worker's JSON log read as it grows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.worker.e2e import process_env
from worker.amqp.topology import Topology

__all__ = [
    "JsonLog",
    "Portal",
    "WorkerRun",
    "free_port",
    "sandbox_portals",
    "sandbox_process",
    "stamp",
    "worker_env",
    "worker_run",
]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time; by PID only."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Portal:
    """A running `python -m worker sandbox`."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/rest/1/sandboxwebhook01/"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_sandbox"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/token/"

    def items(self, entity_type_id: int) -> dict[int, dict[str, Any]]:
        """Every stored item of a type, by id."""
        answer = httpx.get(f"{self.control_url}/items/{entity_type_id}", timeout=30)
        answer.raise_for_status()
        return {item["id"]: item for item in answer.json()}

    def set_faults(self, **faults: Any) -> None:
        httpx.patch(f"{self.control_url}/faults", json=faults, timeout=10).raise_for_status()

    def counters(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.control_url}/counters", timeout=10)
        answer.raise_for_status()
        counters: dict[str, Any] = answer.json()
        return counters


@contextmanager
def sandbox_process(
    *, seed_items: int, latency_ms: int = 0, options: Sequence[str] = ()
) -> Iterator[Portal]:
    """The sandbox with limits off on a free port, answering before this yields;
    ``options`` are more of its command-line options."""
    port = free_port()
    command = [sys.executable, "-m", "worker", "sandbox", "--port", str(port)]
    command += ["--seed", str(seed_items), "--no-limits", "--latency-ms", str(latency_ms)]
    command += options
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        portal = Portal(process, port)
        _until_answering(portal, deadline=time.monotonic() + 30)
        yield portal
    finally:
        _stop(process, timeout_s=10)


@contextmanager
def sandbox_portals(
    count: int, portals_file: Path, *, seed_items: int, latency_ms: int = 0
) -> Iterator[dict[str, Portal]]:
    """`sandbox --portals count` with limits off, each portal on a free port the
    sandbox chose (consecutive ports from a free one may be taken), its webhooks
    written to ``portals_file``; the portals by key, once every one answers."""
    command = [sys.executable, "-m", "worker", "sandbox", "--port", "0"]
    command += ["--portals", str(count), "--portals-file", str(portals_file)]
    command += ["--seed", str(seed_items), "--no-limits", "--latency-ms", str(latency_ms)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not portals_file.exists():  # written in one step, once all listen
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.05)
        written = json.loads(portals_file.read_text())
        portals = {
            key: Portal(process, httpx.URL(entry["webhook_url"]).port or 0)
            for key, entry in written.items()
        }
        for portal in portals.values():
            _until_answering(portal, deadline=deadline)
        yield portals
    finally:
        _stop(process, timeout_s=10)


def _until_answering(portal: Portal, *, deadline: float) -> None:
    while True:
        try:
            httpx.get(portal.control_url + "/", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if portal.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start") from None
            time.sleep(0.05)


def worker_env(amqp_url: str, webhook_url: str, topology: Topology, **extra: str) -> dict[str, str]:
    """`python -m worker run` on this scenario's queues and portal, limits mirrored as off."""
    # The sandbox runs with limits off: nothing to pace against.
    unpaced = {
        "B24_RATE_BURST": "100000",
        "B24_RATE_PER_SECOND": "100000",
        "B24_OPERATING_LIMIT_S": "1000000",
    }
    return process_env(amqp_url, webhook_url, topology, **{**unpaced, **extra})


class JsonLog:
    """A worker's JSON log file, read as it grows (only complete lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        """The records written since the last read."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as log_file:
            log_file.seek(self._offset)
            chunk = log_file.read()
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        new = []
        for line in chunk[:complete].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                new.append(record)
        self.records += new
        return new

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record.get("event") == name]

    def settled(self) -> list[dict[str, Any]]:
        """`message.settled` lines of messages that ended (an event was confirmed)."""
        return [
            record
            for record in self.events("message.settled")
            if record.get("outcome") in ("succeeded", "failed")
        ]

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace")


def stamp(record: dict[str, Any]) -> float:
    """A log line's time, as seconds since the epoch."""
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


@dataclass
class WorkerRun:
    """Successive `python -m worker run` processes on the same queues, one log each."""

    env: dict[str, str]
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[JsonLog] = field(default_factory=list)

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.processes[-1]

    @property
    def log(self) -> JsonLog:
        return self.logs[-1]

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        """One more worker; ``env`` is added to the run's environment for it alone."""
        path = self.log_dir / f"worker-{len(self.processes) + 1}.log"
        with path.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                cwd=ROOT,
                env=self.env | env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        self.logs.append(JsonLog(path))
        return process

    def kill(self) -> float:
        """SIGKILL the current worker; returns when it was sent (epoch seconds)."""
        sent = time.time()
        os.kill(self.current.pid, signal.SIGKILL)
        self.current.wait()
        return sent

    def read_logs(self) -> None:
        for log in self.logs:
            log.read()

    def stop_all(self, timeout_s: float) -> None:
        for process in self.processes:
            _stop(process, timeout_s)


@contextmanager
def worker_run(env: dict[str, str], log_dir: Path) -> Iterator[WorkerRun]:
    """Workers started through the run are stopped by their PIDs when it ends."""
    run = WorkerRun(env, log_dir)
    try:
        yield run
    finally:
        run.stop_all(timeout_s=float(env.get("DRAIN_TIMEOUT_S", "30")) + 10)
