"""Where a worker's first second goes, alone and beside replicas started with it.

    python bench/start_phases.py                # both parts
    python bench/start_phases.py imports        # the interpreter and the imports
    python bench/start_phases.py replicas       # worker processes on a backlog
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

What it shows: the share targets clocked from the processes' start leave a
slow portal (burst 5, 1/s, 10 calls) about 0.34 s from the process's start to
its first call, and three replicas on two cores make their first request
0.7-0.8 s after their launch (BENCHMARKS.md, "Where the first second goes").
"""

from __future__ import annotations

import argparse
import asyncio
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
    REDIS_URL,
    WorkerProcess,
    compiled,
    deals,
    delete_worker_queues,
    paced_sandbox,
    publish,
    worker_env,
    write_results,
)

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = 1000
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
    parser.add_argument("part", nargs="?", choices=("imports", "replicas", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    lines = [f"{os.cpu_count()} cores"]
    if args.part in ("imports", "all"):
        lines += imports(args.rounds, args.workers)
    if args.part in ("replicas", "all"):
        lines += replicas(args.rounds, args.workers)
    write_results("start_phases", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
