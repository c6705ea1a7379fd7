"""Ten portals through one deployment: does each reach its own limit, whatever its neighbours do?

    python bench/tenants.py blocked   # one portal answers OVERLOAD_LIMIT for its first 25 s
    python bench/tenants.py open      # the same portals, none blocked
    python bench/tenants.py all       # both

    --workers N   worker processes (1); more than one share the limiter in Redis
                  (LIMITER_URL=REDIS_URL), as replicas must
    --gate isolation   exit 1 only when isolation or correctness fails, not
                       when a share misses its target (what .ci/run runs)

Ten sandbox portals, each a process on a port of its own (the worker keys a
portal's limits by its host and port): eight healthy (burst 10, 2 requests/s,
2,500 commands each), one slow (burst 5, 1/s, 500) and one more (burst 10,
2/s, 500) that in ``blocked`` answers OVERLOAD_LIMIT until 25 s after the
worker starts. Nine are in B24_PORTALS, one is the portal of the single-portal
variables; BATCH_SIZE 50, every other setting at its default. All commands are
queued before the worker starts, interleaved round-robin by portal with the
x-b24-portal header. The clock starts when the worker process is started.

A portal's ideal is (ceil(N / 50) - burst) / rate seconds and its share is
ideal / (time of its last outcome). Printed per portal: its share, its
requests (batch calls), its failure events and its QUERY_LIMIT_EXCEEDED.

Isolation and correctness: every command ended with one distinct outcome, no
failure event on any portal (so every command of the blocked one succeeded
once it was unblocked), no QUERY_LIMIT_EXCEEDED anywhere, and every worker
exited with 0 (one that did not has its code and its log's end printed). Shares: every
healthy portal at least 0.95 of its ideal, the slow one at least 0.90. The
exit status is 1 when either misses (with --gate isolation, only the first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from schemas.wire import PORTAL_HEADER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    REDIS_URL,
    Sandbox,
    WorkerProcess,
    declare,
    delete_worker_queues,
    drain,
    exit_report,
    paced_sandbox,
    publish,
    wait_for,
    worker_env,
    write_results,
)
from usage import load_average

BATCH = 50
BLOCKED_FOR_S = 25.0


@dataclass(frozen=True)
class Tenant:
    key: str
    kind: str  # healthy, slow or blocked
    burst: int
    rate: float
    commands: int

    def ideal_s(self) -> float:
        return max(0, math.ceil(self.commands / BATCH) - self.burst) / self.rate

    def target(self) -> float | None:
        return {"healthy": 0.95, "slow": 0.90}.get(self.kind)


TENANTS = [
    *(Tenant(f"healthy{n}", "healthy", 10, 2.0, 2500) for n in range(1, 9)),
    Tenant("slow", "slow", 5, 1.0, 500),
    Tenant("blocked", "blocked", 10, 2.0, 500),
]


def run(name: str, *, workers: int) -> tuple[list[str], bool, bool]:
    """The lines to print; whether isolation and correctness held; whether every
    share met its target."""
    block = name == "blocked"
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    sandboxes = {
        t.key: paced_sandbox(commands=t.commands, burst=t.burst, rate=t.rate) for t in TENANTS
    }
    processes: list[WorkerProcess] = []
    unblock: threading.Timer | None = None
    try:
        # Round-robin by portal; message ids m1, m2, ... in this order (harness.publish).
        owner: list[str] = []
        commands: list[tuple[dict[str, Any], dict[str, str]]] = []
        longest = max(t.commands for t in TENANTS)
        for i in range(1, longest + 1):
            for t in TENANTS:
                if i <= t.commands:
                    body = {"entityTypeId": 2, "id": i, "fields": {"title": f"{t.key} {i}"}}
                    commands.append((body, {PORTAL_HEADER: t.key}))
                    owner.append(t.key)
        first, *others = TENANTS
        settings = {
            "BATCH_SIZE": str(BATCH),
            "B24_PORTAL_KEY": first.key,
            "B24_DEFAULT_PORTAL": first.key,
            "B24_WEBHOOK_URL": sandboxes[first.key].webhook_url,
            "B24_RATE_BURST": str(first.burst),
            "B24_RATE_PER_SECOND": str(first.rate),
            "B24_PORTALS": json.dumps(
                {
                    t.key: {
                        "webhook_url": sandboxes[t.key].webhook_url,
                        "rate_burst": t.burst,
                        "rate_per_second": t.rate,
                    }
                    for t in others
                }
            ),
        }
        if workers > 1:
            # Replicas share each portal's limiter, as a deployment of several must.
            settings["LIMITER_URL"] = REDIS_URL
        env = worker_env(prefix, **settings)
        # As after the worker's first start: its queues and exchanges are there.
        asyncio.run(declare(env))
        total = asyncio.run(publish(f"{prefix}update", commands, exchange=True))
        if block:
            _faults(sandboxes["blocked"], overload=True)
        load = load_average()
        start = time.time()
        processes = [WorkerProcess(env) for _ in range(workers)]
        if block:
            unblock = threading.Timer(
                BLOCKED_FOR_S, _faults, (sandboxes["blocked"],), {"overload": False}
            )
            unblock.start()
        wait_for(processes, total)
        exits = [w.stop() for w in processes]
        for w in processes:
            w.log.read()
        events = asyncio.run(drain(f"{prefix}result")) + asyncio.run(drain(f"{prefix}dead"))
        counters = {key: sandbox.counters() for key, sandbox in sandboxes.items()}
    finally:
        if unblock is not None:
            unblock.cancel()
        for w in processes:
            if w.process.poll() is None:
                w.process.kill()
        for sandbox in sandboxes.values():
            sandbox.stop()
        asyncio.run(delete_worker_queues(prefix, [t.key for t in TENANTS]))

    outcomes: dict[str, set[str]] = {}
    for event in events:
        outcomes.setdefault(str(event["messageId"]), set()).add(str(event["status"]))
    counts = Counter(str(event["messageId"]) for event in events)
    ended = {f"m{n}" for n in range(1, total + 1)} <= set(outcomes)
    distinct = all(len(statuses) == 1 for statuses in outcomes.values())
    failed = Counter(
        owner[int(message_id[1:]) - 1]
        for message_id, statuses in outcomes.items()
        if "failed" in statuses
    )
    lines = [
        f"scenario: {name}; {workers} worker process(es)"
        f"{' sharing the limiter in Redis' if workers > 1 else ''}; "
        f"{len(TENANTS)} portals, one sandbox "
        f"process each; BATCH_SIZE {BATCH}; commands interleaved by portal; clock from the "
        "worker process's start",
        f"{load} at the start",
        f"commands: {total}; every one ended: {'yes' if ended else 'NO'}; one distinct "
        f"outcome each: {'yes' if distinct else 'NO'}; duplicates "
        f"{sum(counts.values()) - len(counts)}; worker exit codes {exits}",
    ]
    ok = ended and distinct and not any(exits)
    fair = True
    shares: dict[str, list[float]] = {}
    for t in TENANTS:
        ends = [s for w in processes for s in w.log.ended_by_portal.get(t.key, [])]
        elapsed = max(ends) - start if ends else math.nan
        c = counters[t.key]
        share = t.ideal_s() / elapsed if elapsed > 0 else math.nan
        shares.setdefault(t.kind, []).append(share)
        line = (
            f"portal {t.key} ({t.kind}; burst {t.burst}, {t.rate:g}/s, {t.commands} commands): "
            f"last outcome at {elapsed:.2f} s; ideal {t.ideal_s():.2f} s"
        )
        if t.kind != "blocked":
            line += f"; share {share:.3f}"
        if c.get("first_request_at") and c.get("last_request_at"):
            line += (
                f"; requests arrived from {c['first_request_at'] - start:.2f} s "
                f"to {c['last_request_at'] - start:.2f} s"
            )
        line += (
            f"; {c['requests']} requests; {failed.get(t.key, 0)} failure events; "
            f"{c['query_limit_rejections']} QUERY_LIMIT_EXCEEDED"
        )
        lines.append(line)
        ok = ok and c["query_limit_rejections"] == 0 and not failed.get(t.key, 0)
        target = t.target()
        if target is not None:
            fair = fair and share >= target
    for kind, values in shares.items():
        if kind != "blocked":
            lines.append(f"{kind} portals: share min {min(values):.3f}, max {max(values):.3f}")
    lines += exit_report(processes, exits)
    lines.append(f"isolation and correctness held: {'yes' if ok else 'NO'}")
    lines.append(f"share targets met: {'yes' if fair else 'NO'}")
    lines.append(f"worker logs: {' '.join(str(w.log.path) for w in processes)}")
    return lines, ok, fair


def _faults(sandbox: Sandbox, **faults: Any) -> None:
    httpx.patch(f"{sandbox.base_url}/_sandbox/faults", json=faults, timeout=10).raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["blocked", "open", "all"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gate", choices=["all", "isolation"], default="all")
    args = parser.parse_args()
    names = ["blocked", "open"] if args.scenario == "all" else [args.scenario]
    all_ok = True
    for name in names:
        lines, held, fair = run(name, workers=args.workers)
        suffix = "" if args.workers == 1 else f"-{args.workers}workers"
        write_results(f"tenants-{name}{suffix}", lines)
        all_ok = all_ok and held and (fair or args.gate == "isolation")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
