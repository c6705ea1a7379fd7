"""Start-up time and idle memory of one worker serving many portals.

    python bench/startup.py              # 10, 100 and 1,000 configured portals
    python bench/startup.py 10 100       # these counts
    --portal-queues off                  # every portal on UPDATE_QUEUE: the worker's own
                                         # cost, without N queues on the broker
    --source registry                    # the portals registered (b24-worker portals, a
                                         # SQLite registry) instead of a B24_PORTALS_FILE

For each count N: N webhook portals in a B24_PORTALS_FILE (JSON), pointing at
one sandbox portal (an idle worker calls none of them), BATCH_SIZE 50, every
other setting at its default. The worker is started twice: first on a broker
without its queues (the start declares N portal queues and binds them), then
again on the same queues (every later start). Printed per start: the seconds
from the process's start to its `worker.started` line (queues declared,
consumers registered on every queue), and its resident memory after 10 s idle
(VmRSS) with its peak so far (VmHWM). With portal queues, two workers are
then started together on the same queues and left idle: the CPU each spends
over 30 s, with balancing on (PORTAL_BALANCE_S=10: every round reads every
portal queue's count) and off (0), is the cost of those readings and of
every other periodic look (/metrics' backlog every 15 s, the cancellation
watcher every second). Last, with the worker's queues deleted again, the
broker's part of a first start: the seconds a bare process takes to declare
and bind the same N portal queues (the worker's declare, run alone).

With `--source registry` the N portals are in the registry of portals
(REGISTRY_PATH, sealed under a fresh REGISTRY_KEY; registered through the
Python API, the same as `b24-worker portals add`), and the seconds `b24-worker
portals list` takes to answer, a process started and ended, are printed too.

Targets (exit status 1 when missed): every start within 5 s, idle RSS at most
200 MiB; with the registry, `portals list` within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    WorkerProcess,
    declare,
    delete_worker_queues,
    paced_sandbox,
    worker_env,
    write_results,
)
from usage import cpu_seconds, load_average

from worker.registry import Registry, Sealer, SqliteStore, new_key
from worker.settings import PortalConfig

START_TARGET_S = 5.0
IDLE_RSS_TARGET_MIB = 200.0
LIST_TARGET_S = 1.0
IDLE_S = 10.0
REPLICAS_IDLE_S = 30.0


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


def idle_cpu(env: dict[str, str], *, replicas: int) -> list[float]:
    """The share of a core each of ``replicas`` workers, started together, spends idle."""
    began = time.monotonic()
    workers = [WorkerProcess(env) for _ in range(replicas)]
    try:
        for worker in workers:
            started_after(worker, began)
        time.sleep(IDLE_S)  # past the start's own work
        before = [cpu_seconds(worker.pid) for worker in workers]
        time.sleep(REPLICAS_IDLE_S)
        return [
            (cpu_seconds(worker.pid) - spent) / REPLICAS_IDLE_S
            for worker, spent in zip(workers, before, strict=True)
        ]
    finally:
        for worker in workers:
            worker.stop()


def declared_alone(keys: list[str], where: dict[str, str]) -> float:
    """Seconds a bare process takes to declare and bind the queues of a worker serving
    ``keys`` (configured by ``where``): the worker's declare without the worker, the
    part of a first start that the broker's work bounds."""
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    env = worker_env(prefix, BATCH_SIZE="50", **where)
    began = time.monotonic()
    try:
        asyncio.run(declare(env))
        return time.monotonic() - began
    finally:
        asyncio.run(delete_worker_queues(prefix, [*keys, "default"]))


def register(path: Path, key: str, portals: dict[str, str]) -> None:
    """``portals`` (key -> webhook URL) in a SQLite registry at ``path``."""

    async def add_all() -> None:
        registry = Registry(SqliteStore(path), Sealer(key), allow_http=True)
        for portal, url in portals.items():
            await registry.add(portal, PortalConfig(webhook_url=SecretStr(url)))

    asyncio.run(add_all())


def listed_in(env: dict[str, str]) -> tuple[float, int]:
    """Seconds `b24-worker portals list` took, and the portals it listed."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "worker", "portals", "list"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return time.monotonic() - began, len(done.stdout.splitlines()) - 1


def run(count: int, *, portal_queues: bool, source: str) -> tuple[list[str], bool]:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    sandbox = paced_sandbox(commands=1, burst=50, rate=2.0)
    keys = [f"p{n:04d}" for n in range(count)]
    folder = Path(tempfile.mkdtemp())
    if source == "registry":
        key = new_key()
        register(folder / "portals.sqlite3", key, dict.fromkeys(keys, sandbox.webhook_url))
        # The one portal of the B24_* variables is a webhook too: a worker needs one.
        where = {
            "REGISTRY_PATH": str(folder / "portals.sqlite3"),
            "REGISTRY_KEY": key,
            "B24_WEBHOOK_URL": sandbox.webhook_url,
        }
        described = "registered portals (b24-worker portals, SQLite), webhooks"
    else:
        path = folder / "portals.json"
        path.write_text(json.dumps({key: {"webhook_url": sandbox.webhook_url} for key in keys}))
        where = {"B24_PORTALS_FILE": str(path)}
        described = "configured portals (B24_PORTALS_FILE, webhooks)"
    env = worker_env(
        prefix, BATCH_SIZE="50", PORTAL_QUEUES="true" if portal_queues else "false", **where
    )
    queues = "a queue each" if portal_queues else "all on UPDATE_QUEUE (PORTAL_QUEUES=false)"
    lines = [f"{count} {described}, {queues}; BATCH_SIZE 50"]
    ok = True
    try:
        if source == "registry":
            seconds, listed = listed_in(env)
            lines.append(f"  `b24-worker portals list`: {listed} portals in {seconds:.2f} s")
            ok = ok and seconds <= LIST_TARGET_S and listed == count
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
        if portal_queues:
            for balance in ("10", "0"):
                shares = idle_cpu({**env, "PORTAL_BALANCE_S": balance}, replicas=2)
                lines.append(
                    f"  two workers idle, PORTAL_BALANCE_S={balance}: CPU "
                    + " and ".join(f"{share:.1%}" for share in shares)
                    + f" of a core over {REPLICAS_IDLE_S:g} s"
                )
        if portal_queues and source == "file":
            # The node as before the first start: without the worker's queues.
            asyncio.run(delete_worker_queues(prefix, [*keys, "default"]))
            lines.append(
                f"  the broker's part of a first start: {count} portal queues declared and "
                f"bound by a bare process in {declared_alone(keys, where):.2f} s"
            )
    finally:
        sandbox.stop()
        shutil.rmtree(folder)
        asyncio.run(delete_worker_queues(prefix, [*keys, "default"]))
    return lines, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="*", type=int, default=[10, 100, 1000])
    parser.add_argument("--portal-queues", choices=["on", "off"], default="on")
    parser.add_argument("--source", choices=["file", "registry"], default="file")
    args = parser.parse_args()
    lines = [f"{load_average()} at the start"]
    all_ok = True
    for count in args.counts:
        found, ok = run(count, portal_queues=args.portal_queues == "on", source=args.source)
        lines += found
        all_ok = all_ok and ok
    listing = f", `portals list` within {LIST_TARGET_S:g} s" if args.source == "registry" else ""
    lines.append(
        f"targets (start within {START_TARGET_S:g} s, idle RSS at most "
        f"{IDLE_RSS_TARGET_MIB:g} MiB{listing}) met: {'yes' if all_ok else 'NO'}"
    )
    write_results("startup", lines)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
