"""Where a worker's first second goes, alone and beside replicas started with it.

    python bench/start_phases.py                # both parts
    python bench/start_phases.py imports        # the interpreter and the imports
    python bench/start_phases.py replicas       # worker processes on a backlog
    python bench/start_phases.py floor          # a bare consumer, no worker code
    --rounds N     rounds of each part (5)
    --workers N    most processes at once (3)

``imports``: for 1 to --workers interpreters started at once, each one times
importing what `b24-worker run` imports before it connects (``worker.cli`` and
``worker.runtime.app``, the collector off as `run` keeps it), and the wall
time of the whole process is taken from outside. With as many processes as
cores they should not slow each other; with more they share the cores.

``replicas``: for 1 to --workers worker processes started together on one
portal's backlog (1,000 commands queued before they start; a sandbox portal at
burst 50, 2/s; the limiter in Redis when more than one, as replicas must), the
seconds from the processes' launch to each one's `broker.connected`,
`worker.started` and first settled message, read from its own log, and when
the portal received its first request. Each round stops the workers once the
first batch is settled.

``floor``: the same backlog taken by a bare process instead of a worker: it
imports aio-pika and httpx (and, as ``stack``, pydantic, pydantic-settings
and structlog as well, the libraries the worker is built on, none of its
code), connects, takes 50 deliveries and sends them as one `batch` call. The
seconds from its launch to the portal's first request are the least any
worker on these libraries can take on this host, one process alone.

What it shows: the share targets clocked from the processes' start leave a
slow portal (burst 5, 1/s, 10 calls) about 0.34 s from the process's start to
its first call, and three replicas on two cores make their first request
0.7-0.8 s after their launch (BENCHMARKS.md, "Where the first second goes");
the libraries alone, before any of the worker's code, take about that 0.34 s
(BENCHMARKS.md, "The floor of a start on these libraries").
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    AMQP_URL,
    REDIS_URL,
    WorkerProcess,
    compiled,
    deals,
    delete_queues,
    delete_worker_queues,
    paced_sandbox,
    publish,
    worker_env,
    write_results,
)

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = 1000
# The bare consumer: argv is the broker's URL, the queue, the webhook URL and
# "stack" or "bare". Time is taken from outside (the portal's first request).
_BARE = """
import asyncio, json, sys, urllib.parse
import aio_pika, httpx
if sys.argv[4] == "stack":
    import pydantic, pydantic_settings, structlog

async def main():
    connection = await aio_pika.connect(sys.argv[1])
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=50)
    queue = await channel.get_queue(sys.argv[2], ensure=False)
    taken = []
    full = asyncio.Event()
    async def take(message):
        taken.append(message)
        if len(taken) == 50:
            full.set()
    await queue.consume(take)
    await full.wait()
    cmd = {}
    for n, message in enumerate(taken):
        body = json.loads(message.body)
        fields = {f"fields[{name}]": value for name, value in body["fields"].items()}
        query = {"entityTypeId": body["entityTypeId"], "id": body["id"], **fields}
        cmd[f"c{n}"] = "crm.item.update?" + urllib.parse.urlencode(query)
    async with httpx.AsyncClient() as http:
        answer = await http.post(sys.argv[3] + "batch.json", json={"halt": 0, "cmd": cmd})
    answer.raise_for_status()
    assert not answer.json()["result"]["result_error"], answer.text[:300]
    for message in taken:
        await message.ack()
    await connection.close()

asyncio.run(main())
"""
_IMPORTS = (
    "import gc, time; gc.disable(); started = time.perf_counter(); "
    "import worker.cli; import worker.runtime.app; "
    "print(round((time.perf_counter() - started) * 1000))"
)


def imports(rounds: int, most: int) -> list[str]:
    compiled()
    lines = [f"imports: what `b24-worker run` imports before it connects; {rounds} rounds"]
    for count in range(1, most + 1):
        inside: list[float] = []
        whole: list[float] = []
        for _ in range(rounds):
            launched = time.perf_counter()
            processes = [
                subprocess.Popen(
                    [sys.executable, "-c", _IMPORTS], stdout=subprocess.PIPE, cwd=ROOT, text=True
                )
                for _ in range(count)
            ]
            for process in processes:
                out, _ = process.communicate()
                whole.append((time.perf_counter() - launched) * 1000)
                inside.append(float(out.strip()))
        lines.append(
            f"{count} at once: imports {_spread(inside)} ms; whole process, from the "
            f"launch of the first, {_spread(whole)} ms"
        )
    return lines


def replicas(rounds: int, most: int) -> list[str]:
    lines = [
        f"replicas: one portal (burst 50, 2/s), {COMMANDS} commands queued before the start; "
        "seconds from the launch to each worker's broker.connected / worker.started / "
        f"first settled message; {rounds} rounds"
    ]
    for count in range(1, most + 1):
        for _ in range(rounds):
            time.sleep(1.0)  # the broker done with the last round's queues
            lines.append(f"{count} worker(s): {_replicas_round(count)}")
    return lines


def _replicas_round(count: int) -> str:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    sandbox = paced_sandbox(commands=COMMANDS, burst=50, rate=2.0)
    settings = {"B24_WEBHOOK_URL": sandbox.webhook_url, "B24_RATE_BURST": "50"}
    if count > 1:
        settings["LIMITER_URL"] = REDIS_URL
    env = worker_env(prefix, **settings)
    workers: list[WorkerProcess] = []
    try:
        asyncio.run(publish(f"{prefix}update", ((body, {}) for body in _commands())))
        launched = time.time()
        workers = [WorkerProcess(env) for _ in range(count)]
        # Each log read from where the last look stopped: the watcher's CPU stays out
        # of the starts it times.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(w.log.ended for w in workers):
            time.sleep(0.05)
            for w in workers:
                w.log.read()
        first_request = sandbox.counters().get("first_request_at")
    finally:
        for w in workers:
            w.stop()
        sandbox.stop()
        asyncio.run(delete_worker_queues(prefix))
    each = []
    for w in workers:
        each.append(" / ".join(_at(stamp, launched) for stamp in _phases(w)))
    portal = _at(first_request, launched) if first_request else "-"
    return f"{'; '.join(each)}; the portal's first request at {portal}"


def floor(rounds: int) -> list[str]:
    lines = [
        f"floor: a bare consumer on the same backlog ({COMMANDS} commands queued); seconds "
        f"from its launch to the portal's first request (50 commands in one batch); {rounds} rounds"
    ]
    libraries = {"bare": "aio-pika, httpx", "stack": "+ pydantic, pydantic-settings, structlog"}
    for imported, what in libraries.items():
        seconds = [_floor_round(imported) for _ in range(rounds)]
        lines.append(f"{imported} ({what}): {_spread([s * 1000 for s in seconds])} ms")
    return lines


def _floor_round(imported: str) -> float:
    time.sleep(1.0)  # the broker done with the last round's queue
    queue = f"bench.{uuid.uuid4().hex[:8]}.floor"
    sandbox = paced_sandbox(commands=COMMANDS, burst=50, rate=2.0)
    try:
        asyncio.run(publish(queue, ((body, {}) for body in _commands())))
        launched = time.time()
        subprocess.run(
            [sys.executable, "-c", _BARE, AMQP_URL, queue, sandbox.webhook_url, imported],
            check=True,
            timeout=30,
            cwd=ROOT,
        )
        first_request = sandbox.counters()["first_request_at"]
    finally:
        sandbox.stop()
        asyncio.run(delete_queues([queue, f"{queue}.poison"]))
    return float(first_request) - launched


def _commands() -> list[dict[str, object]]:
    return deals(COMMANDS, lambda i: {"title": f"start {i}"})


def _phases(worker: WorkerProcess) -> tuple[float | None, float | None, float | None]:
    connected = started = settled = None
    for line in worker.log.path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # not a log line, or the last one half written
        if not isinstance(entry, dict) or "timestamp" not in entry:
            continue
        event = entry.get("event")
        stamp = datetime.fromisoformat(entry["timestamp"]).timestamp()
        if event == "broker.connected" and connected is None:
            connected = stamp
        elif event == "worker.started" and started is None:
            started = stamp
        elif event == "message.settled" and settled is None:
            settled = stamp
    return connected, started, settled


def _at(stamp: float | None, launched: float) -> str:
    return f"{stamp - launched:.2f}" if stamp is not None else "-"


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f} (from {min(values):.0f} to {max(values):.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ("imports", "replicas", "floor", "all")
    parser.add_argument("part", nargs="?", choices=parts, default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    # The environment matters: with rich installed (a development tool's), httpx
    # and structlog import it, about 60 ms more per process.
    rich = importlib.util.find_spec("rich") is not None
    lines = [f"{os.cpu_count()} cores; {sys.prefix}, rich {'installed' if rich else 'absent'}"]
    if args.part in ("imports", "all"):
        lines += imports(args.rounds, args.workers)
    if args.part in ("replicas", "all"):
        lines += replicas(args.rounds, args.workers)
    if args.part in ("floor", "all"):
        lines += floor(args.rounds)
    write_results("start_phases", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
