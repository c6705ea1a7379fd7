"""Start-up time and idle memory of one worker serving many portals.

    python bench/startup.py              # 10, 100 and 1,000 configured portals
    python bench/startup.py 10 100       # these counts
    --portal-queues off                  # every portal on UPDATE_QUEUE: the worker's own
                                         # cost, without N queues on the broker

For each count N: N webhook portals in a B24_PORTALS_FILE (JSON), pointing at
one sandbox portal (an idle worker calls none of them), BATCH_SIZE 50, every
other setting at its default. The worker is started twice: first on a broker
without its queues (the start declares N portal queues and binds them), then
again on the same queues (every later start). Printed per start: the seconds
from the process's start to its `worker.started` line (queues declared,
consumers registered on every queue), and its resident memory after 10 s idle
(VmRSS) with its peak so far (VmHWM).

Targets (exit status 1 when missed): every start within 5 s, idle RSS at most
200 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    WorkerProcess,
    delete_worker_queues,
    paced_sandbox,
    worker_env,
    write_results,
)
from usage import load_average

START_TARGET_S = 5.0
IDLE_RSS_TARGET_MIB = 200.0
IDLE_S = 10.0


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def started_after(worker: WorkerProcess, began: float, timeout_s: float = 120.0) -> float:
    """Seconds from ``began`` to the worker's `worker.started` line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in worker.log.path.read_text().splitlines():
            if '"worker.started"' in line:
                return time.monotonic() - began
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited: see {worker.log.path}")
        time.sleep(0.01)
    raise TimeoutError(f"no worker.started within {timeout_s} s: see {worker.log.path}")


def run(count: int, *, portal_queues: bool) -> tuple[list[str], bool]:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    sandbox = paced_sandbox(commands=1, burst=50, rate=2.0)
    keys = [f"p{n:04d}" for n in range(count)]
    portals = {key: {"webhook_url": sandbox.webhook_url} for key in keys}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(portals, file)
    env = worker_env(
        prefix,
        BATCH_SIZE="50",
        B24_PORTALS_FILE=file.name,
        PORTAL_QUEUES="true" if portal_queues else "false",
    )
    queues = "a queue each" if portal_queues else "all on UPDATE_QUEUE (PORTAL_QUEUES=false)"
    lines = [f"{count} configured portals (B24_PORTALS_FILE, webhooks), {queues}; BATCH_SIZE 50"]
    ok = True
    try:
        for start in ("first start (declares the queues)", "next start (queues there)"):
            began = time.monotonic()
            worker = WorkerProcess(env)
            try:
                seconds = started_after(worker, began)
                time.sleep(IDLE_S)
                rss, peak = rss_mib(worker.pid)
            finally:
                worker.stop()
            lines.append(
                f"  {start}: started in {seconds:.2f} s; after {IDLE_S:g} s idle RSS "
                f"{rss:.0f} MiB (peak {peak:.0f} MiB)"
            )
            ok = ok and seconds <= START_TARGET_S and rss <= IDLE_RSS_TARGET_MIB
    finally:
        sandbox.stop()
        Path(file.name).unlink()
        asyncio.run(delete_worker_queues(prefix, keys))
    return lines, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="*", type=int, default=[10, 100, 1000])
    parser.add_argument("--portal-queues", choices=["on", "off"], default="on")
    args = parser.parse_args()
    lines = [f"{load_average()} at the start"]
    all_ok = True
    for count in args.counts:
        found, ok = run(count, portal_queues=args.portal_queues == "on")
        lines += found
        all_ok = all_ok and ok
    lines.append(
        f"targets (start within {START_TARGET_S:g} s, idle RSS at most "
        f"{IDLE_RSS_TARGET_MIB:g} MiB) met: {'yes' if all_ok else 'NO'}"
    )
    write_results("startup", lines)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
