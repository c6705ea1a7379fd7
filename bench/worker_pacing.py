"""The worker against a fresh sandbox portal at its limits, as users run it.

Real processes: `b24-worker sandbox` and `b24-worker run` (JSON logs on, to a
file), the broker at AMQP_URL, queues of their own. The commands are published
first; the clock runs from the worker's first delivery to its last settled
message, both read from its own log.

    python bench/worker_pacing.py bucket      # 5,000 updates, burst 50, 2/s
    python bench/worker_pacing.py operating   # operating limit 12 s per 60 s, 0.2 s per update
    python bench/worker_pacing.py unlimited   # limits off: throughput and CPU per message

Figures printed: wall time, the ideal, rate-limit answers the sandbox counted,
successes (and duplicates), failures, and the worker's CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import run_bare_loop
from harness import (
    AMQP_URL,
    Sandbox,
    WorkerLog,
    cpu_seconds,
    deals,
    delete_queues,
    drain,
    publish,
    queue_names,
)

SCENARIOS: dict[str, dict[str, Any]] = {
    # Cloud bucket limits. The operating cost is set under the portal's 0.1 s
    # charging floor: this run measures the request bucket alone.
    "bucket": {"count": 5000, "sandbox": ["--operating-cost-s", "0.05"], "env": {}},
    "operating": {
        "count": 300,
        "sandbox": [
            "--operating-limit-s",
            "12",
            "--operating-window-s",
            "60",
            "--operating-cost",
            "crm.item.update=0.2",
            "--operating-cost-s",
            "0.05",
        ],
        "env": {"B24_OPERATING_LIMIT_S": "12", "B24_OPERATING_WINDOW_S": "60"},
    },
    # No limits on the portal, and the worker told so (a portal with limits off
    # has no bucket to mirror).
    "unlimited": {
        "count": 20000,
        "sandbox": ["--no-limits"],
        "env": {
            "B24_RATE_BURST": "100000",
            "B24_RATE_PER_SECOND": "100000",
            "B24_OPERATING_LIMIT_S": "1000000",
        },
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--count", type=int, help="commands (default per scenario)")
    args = parser.parse_args()
    scenario = SCENARIOS[args.scenario]
    count = args.count or scenario["count"]
    bare_before = asyncio.run(run_bare_loop(count)) if args.scenario == "unlimited" else (0, 0)
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    portal = Sandbox(["--seed", str(count), "--spa-types", "", *scenario["sandbox"]])
    log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
    try:
        commands = deals(count, lambda i: {"title": f"bench {i}", "opened": "Y"})
        asyncio.run(publish(f"{prefix}update", ((body, {}) for body in commands)))
        env = {
            **os.environ,
            "AMQP_URL": AMQP_URL,
            "B24_WEBHOOK_URL": portal.webhook_url,
            "UPDATE_QUEUE": f"{prefix}update",
            "RESULT_QUEUE": f"{prefix}result",
            "DEAD_LETTER_QUEUE": f"{prefix}dead",
            "HTTP_PORT": "0",
            "LOG_LEVEL": "INFO",
            **scenario["env"],
        }
        with log_path.open("w") as log_file:
            profile = os.environ.get("BENCH_PROFILE")  # a file: cProfile the worker into it
            command = ["-m", "cProfile", "-o", profile] if profile else []
            worker = subprocess.Popen(
                [sys.executable, *command, "-m", "worker", "run"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
            spy = os.environ.get("BENCH_PYSPY")  # a file: sample the worker for 10 s with py-spy
            if spy:
                subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(worker.pid),
                        "-d",
                        "10",
                        "-r",
                        "200",
                        "-f",
                        "raw",
                        "-o",
                        spy,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + 1800
            cpu = 0.0
            watched = WorkerLog(log_path)
            while time.monotonic() < deadline:
                time.sleep(0.5)
                cpu = cpu_seconds(worker.pid)
                watched.read()
                if len(watched.ended) >= count or worker.poll() is not None:
                    break
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        watched.read()
        first, ended = watched.first, watched.ended
        events = asyncio.run(drain(f"{prefix}result"))
        dead = asyncio.run(drain(f"{prefix}dead"))
        counters = portal.counters()
    finally:
        portal.stop()
        asyncio.run(delete_queues(queue_names(prefix)))
    ids = [e["messageId"] for e in events]
    elapsed = (ended[-1] - first) if first is not None and ended else math.nan
    print(f"scenario: {args.scenario}, {count} commands for distinct deals, BATCH_SIZE 50")
    print(f"time from first delivery to last settled message: {elapsed:.2f} s")
    if args.scenario == "bucket":
        ideal = (math.ceil(count / 50) - 50) / 2
        print(f"ideal: {ideal:.2f} s; ratio {elapsed / ideal:.3f} (target <= 1.05)")
    if args.scenario == "operating" and first is not None:
        allowed = 12 / 0.2  # updates per 60 s window the budget allows
        # The first window starts empty and the last is partial: the steady rate
        # is the mean over the complete windows between them.
        windows = [0] * (int((ended[-1] - first) // 60) + 1)
        for stamp in ended:
            windows[int((stamp - first) // 60)] += 1
        steady = windows[1:-1]
        per_window = sum(steady) / len(steady) if steady else math.nan
        print(
            f"per 60 s window: {windows}; steady {per_window:.1f} of the {allowed:.0f} the "
            f"budget allows: {per_window / allowed:.1%} (target >= 90%)"
        )
    if args.scenario == "unlimited":
        print(
            f"worker: {count / elapsed:.0f} commands/s; CPU {cpu:.1f} s, "
            f"{cpu / count * 1e6:.0f} us per message (whole process, start-up included)"
        )
        # The bare loop runs before and after the worker: this machine's speed
        # drifts from minute to minute, and the worker is held to the mean.
        bare_runs = [bare_before, asyncio.run(run_bare_loop(count))]
        for when, (bare_s, bare_cpu) in zip(("before", "after"), bare_runs, strict=True):
            print(
                f"bare loop {when} the worker, same broker: {count / bare_s:.0f} messages/s; "
                f"{bare_cpu / count * 1e6:.0f} us CPU per message"
            )
        bare_rate = sum(count / bare_s for bare_s, _ in bare_runs) / len(bare_runs)
        print(f"worker / bare (mean) = {(count / elapsed) / bare_rate:.2f} (target >= 1)")
    print(
        f"successes: {len(events)} ({len(set(ids))} distinct, "
        f"{len(ids) - len(set(ids))} duplicates)"
    )
    print(f"failures: {len(dead)}")
    print(
        f"sandbox: {counters['requests']} requests, {counters['query_limit_rejections']} "
        f"QUERY_LIMIT_EXCEEDED, {counters['operation_limit_rejections']} OPERATION_TIME_LIMIT"
    )
    print(f"worker log: {log_path}")
    return 0 if len(set(ids)) == count and not dead else 1


if __name__ == "__main__":
    sys.exit(main())
