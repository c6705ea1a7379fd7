"""What every benchmark and scenario script shares: real processes, real queues, the logs.

The sandbox and the workers run as the processes users run (`b24-worker
sandbox`, `b24-worker run`, JSON logs on, written to files); the scripts read
those logs and the sandbox's own counters, never the worker's internals.
"""

from __future__ import annotations

import asyncio
import compileall
import functools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from usage import cpu_seconds, load_average, peak_rss_mib

__all__ = [
    "AMQP_URL",
    "REDIS_URL",
    "PySpy",
    "Sandbox",
    "WorkerLog",
    "WorkerProcess",
    "cpu_seconds",
    "deals",
    "delete_queues",
    "delete_worker_queues",
    "drain",
    "exit_report",
    "free_port",
    "load_average",
    "peak_rss_mib",
    "portal_queue_names",
    "publish",
    "queue_names",
    "wait_for",
    "worker_env",
    "write_results",
]

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
WEBHOOK_PATH = "/rest/1/sandboxwebhook01/"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Sandbox:
    """A sandbox portal process on a free port of its own."""

    def __init__(self, options: Iterable[str]) -> None:
        compiled()
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "sandbox", "--port", str(self.port), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                httpx.get(f"{self.base_url}/_sandbox/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.process.kill()
        raise SystemExit("the sandbox did not start")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}{WEBHOOK_PATH}"

    def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = httpx.get(f"{self.base_url}/_sandbox/counters").json()
        return counters

    def stop(self) -> None:
        _terminate(self.process, timeout_s=30)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def paced_sandbox(*, commands: int, burst: int, rate: float) -> Sandbox:
    """A sandbox portal seeded with ``commands`` deals, whose request bucket alone binds."""
    return Sandbox(
        [
            "--seed",
            str(commands),
            "--spa-types",
            "",
            "--rate-burst",
            str(burst),
            "--rate-per-second",
            str(rate),
            # Under the portal's 0.1 s charging floor: the request bucket alone binds.
            "--operating-cost-s",
            "0.05",
        ]
    )


def queue_names(prefix: str, delays: Iterable[int] = (5, 30, 120, 600)) -> list[str]:
    """The queues a worker with UPDATE_QUEUE ``<prefix>update`` declares."""
    names = ["update", "update.poison", "update.retry", "result", "dead"]
    return [prefix + name for name in (*names, *[f"update.retry.{d}s" for d in delays])]


def worker_env(prefix: str, **settings: str) -> dict[str, str]:
    """The environment of a worker on the queues of ``prefix``, JSON logs at INFO."""
    return {
        **os.environ,
        "AMQP_URL": AMQP_URL,
        "UPDATE_QUEUE": f"{prefix}update",
        "RESULT_QUEUE": f"{prefix}result",
        "DEAD_LETTER_QUEUE": f"{prefix}dead",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        **settings,
    }


async def declare(env: Mapping[str, str]) -> None:
    """Declare the queues and exchanges a worker with ``env`` declares at its start, as
    if it had run once: the commands can then be published through the exchange."""
    from worker.amqp.topology import declare as declare_topology
    from worker.settings import Settings

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        await declare_topology(connection, settings.topology())
    finally:
        await connection.close()


async def publish(
    queue: str,
    commands: Iterable[tuple[dict[str, Any], Mapping[str, str]]],
    *,
    exchange: bool = False,
) -> int:
    """Queue each (command, headers) before any worker runs; returns how many.

    With ``exchange``, through the exchange ``queue`` the workers declared
    (`declare`), with each command's item as its routing key.
    """
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    if exchange:
        target = await channel.get_exchange(queue)
    else:
        target = channel.default_exchange
        await channel.declare_queue(
            queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": 50,
                "x-dead-letter-routing-key": f"{queue}.poison",
            },
        )
    count = 0
    for body, headers in commands:
        count += 1
        await target.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                message_id=f"m{count}",
                headers=dict(headers),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"{body['entityTypeId']}:{body['id']}" if exchange else queue,
        )
    await connection.close()
    return count


def deals(count: int, fields_of: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One update per deal 1..count."""
    return [{"entityTypeId": 2, "id": i, "fields": fields_of(i)} for i in range(1, count + 1)]


async def drain(queue: str, *, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Every event on ``queue``, taken off it. Call it once nothing publishes there.

    Consumed in no-ack mode with a wide prefetch, not fetched one ``basic.get``
    round trip at a time: 50,000 events come off in seconds.
    """
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        source = await channel.declare_queue(queue, passive=True)
        waiting = source.declaration_result.message_count or 0
        events: list[dict[str, Any]] = []
        if not waiting:
            return events
        all_in = asyncio.Event()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            events.append(json.loads(message.body))
            if len(events) >= waiting:
                all_in.set()

        tag = await source.consume(take, no_ack=True)
        try:
            await asyncio.wait_for(all_in.wait(), timeout_s)
        finally:
            await source.cancel(tag)
        return events
    finally:
        await connection.close()


def portal_queue_names(prefix: str, portals: Iterable[str]) -> list[str]:
    """The queue of each portal, for a worker with UPDATE_QUEUE ``<prefix>update``."""
    return [f"{prefix}update.portal.{key}" for key in portals]


async def delete_worker_queues(prefix: str, portals: Iterable[str] = ()) -> None:
    """Every queue a worker on ``prefix`` declares; with ``portals``, their queues
    and the two exchanges in front of them as well."""
    queues = portal_queue_names(prefix, portals)
    exchanges = [f"{prefix}update", f"{prefix}update.unrouted"] if queues else []
    await delete_queues([*queue_names(prefix), *queues], exchanges=exchanges)


async def delete_queues(names: Iterable[str], *, exchanges: Iterable[str] = ()) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    for name in names:
        await channel.queue_delete(name)
    for name in exchanges:
        await channel.exchange_delete(name)
    await connection.close()


class WorkerLog:
    """A worker's JSON log, read as it grows: when consumption started, and
    when each message ended (succeeded or failed), by portal. Reading only the
    new part keeps the watcher's own CPU out of the way of the run it measures."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._started: float | None = None
        self.ended: list[float] = []
        self.ended_by_portal: dict[str, list[float]] = {}

    def read(self) -> None:
        with self.path.open("rb") as log_file:
            log_file.seek(self._offset)
            chunk = log_file.read()
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        for line in chunk[:complete].splitlines():
            if b'"timestamp"' not in line:
                continue
            settled = b'"message.settled"' in line
            if not settled and b'"consumer.started"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            stamp = datetime.fromisoformat(entry["timestamp"]).timestamp()
            if settled and entry.get("outcome") in ("succeeded", "failed"):
                self.ended.append(stamp)
                portal = str(entry.get("portal"))
                self.ended_by_portal.setdefault(portal, []).append(stamp)
            elif entry.get("event") == "consumer.started" and self._started is None:
                self._started = stamp

    @property
    def first(self) -> float | None:
        # Deliveries begin while the consumers start; the first end may come before the line.
        if self.ended and (self._started is None or self.ended[0] < self._started):
            return self.ended[0]
        return self._started


@functools.cache
def compiled() -> None:
    """Byte-compile the project's packages, as installing its wheel does.

    The checkout is installed in editable mode, and where PYTHONDONTWRITEBYTECODE
    is set nothing else writes the ``.pyc`` files: every process would compile
    the project's modules again at each start, about 0.15 s that a worker
    installed from its wheel (the image's) never spends.
    """
    root = Path(__file__).resolve().parent.parent
    for package in ("worker", "schemas", "sandbox"):
        compileall.compile_dir(root / package, quiet=1)


class WorkerProcess:
    """``b24-worker run`` with its log in a file of its own."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        python_options: Iterable[str] = (),
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """``open_files``: the soft and hard limits of open files it starts with."""
        compiled()
        self.log = WorkerLog(Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1]))

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

        with self.log.path.open("w") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, *python_options, "-m", "worker", "run"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env),
                preexec_fn=limit,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        """SIGTERM (the worker drains), then SIGKILL if it has not exited within 60 s."""
        return _terminate(self.process, timeout_s=60)

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.pid)


def _terminate(process: subprocess.Popen[bytes], *, timeout_s: float) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class PySpy:
    """py-spy sampling a running process into collapsed stacks (``-f raw``).

    Non-blocking sampling by default: the target is not paused at each
    sample, so its speed is disturbed less (the sampler still takes CPU of
    its own), but a few stacks come out cut short. ``native`` pauses it to
    read C frames too: the garbage collector and system calls show by name.
    """

    def __init__(
        self, pid: int, output: str, *, duration_s: float, rate_hz: int = 200, native: bool = False
    ) -> None:
        beside = Path(sys.executable).with_name("py-spy")
        program = str(beside) if beside.exists() else shutil.which("py-spy")
        if program is None:
            raise SystemExit("py-spy is not installed (pip install py-spy)")
        self.output = output
        self.duration_s = max(1, round(duration_s))
        self.process = subprocess.Popen(
            [
                program,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(self.duration_s),
                "--rate",
                str(rate_hz),
                # C frames (the garbage collector, system calls) need the target paused.
                "--native" if native else "--nonblocking",
                "--nolineno",
                "--format",
                "raw",
                "--output",
                output,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait(self) -> int:
        """Until the recording ends (it also ends when the target exits)."""
        try:
            return self.process.wait(timeout=self.duration_s + 30)
        except subprocess.TimeoutExpired:
            return self.stop()

    def stop(self) -> int:
        return _terminate(self.process, timeout_s=5)


def wait_for(
    workers: list[WorkerProcess], count: int, *, timeout_s: float = 1800.0
) -> list[WorkerProcess]:
    """Until the workers together have ended ``count`` messages (or one exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        for worker in workers:
            worker.log.read()
        if sum(len(w.log.ended) for w in workers) >= count:
            break
        if any(w.process.poll() is not None for w in workers):
            break
    return workers


def exit_report(workers: list[WorkerProcess], exits: list[int], *, last: int = 25) -> list[str]:
    """For each worker that exited with an error: its code and the end of its log.

    A CI host keeps no files of a failed run; these lines carry why it failed."""
    lines: list[str] = []
    for worker, code in zip(workers, exits, strict=True):
        if code == 0:
            continue
        with worker.log.path.open("rb") as log_file:
            tail = log_file.read().decode(errors="replace").splitlines()[-last:]
        lines.append(f"worker {worker.pid} exited with code {code}; its log ends:")
        lines += [f"  {line[:2000]}" for line in tail]
    return lines


def write_results(name: str, lines: list[str], *, results: Path | None = None) -> Path:
    """Print this run's figures and add them to <results>/<name>.txt (bench/results by
    default) with the time of the run.

    A results file keeps every run, oldest first: a figure quoted in README or
    BENCHMARKS.md stays traceable after the benchmark runs again. Only this
    run is printed."""
    results = results if results is not None else Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{name}.txt"
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    run = "\n".join([f"# {name}, run {stamp} on {os.cpu_count()} cores", *lines]) + "\n"
    earlier = path.read_text() + "\n" if path.exists() else ""
    path.write_text(earlier + run)
    print(run, end="")
    return path
