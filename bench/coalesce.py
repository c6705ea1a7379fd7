"""Coalescing: a sync loop's updates of the same items, with COALESCE=safe and off.

    python bench/coalesce.py [--items 2000] [--updates 10] [--order shuffled|round-robin]
                             [--prefetch 300 ...]

Real processes: a sandbox portal whose request bucket binds (burst 50, 2
requests/s; each call charged under the operating floor) and `b24-worker run`
(JSON logs, BATCH_SIZE 50, the limits told to it). Each item gets ``--updates``
updates in order: update k sets the title, even ones the amount
(`opportunity`), every third the comments. All are published before the
worker starts, the items interleaved: ``shuffled`` mixes them at random (a
fixed seed) keeping each item's updates in order; ``round-robin`` sends update
k of every item before update k+1 of any. Each prefetch given is run with
COALESCE=safe and with COALESCE=off.

Printed for each run: the calls the portal saw, the items it saved, the time
from the worker's first delivery to its last outcome, the share of commands
applied together with others (`coalescedWith` in their events), and whether
every item ends with the values of the last update that set each field (read
from the sandbox's store).

Adds the figures to bench/results/coalesce.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    WorkerProcess,
    delete_worker_queues,
    drain,
    paced_sandbox,
    publish,
    worker_env,
    write_results,
)

DEAL = 2
METHOD = "crm.item.update"
BURST = 50
RATE = 2.0


def fields_of(item: int, k: int) -> dict[str, Any]:
    fields: dict[str, Any] = {"title": f"deal {item} update {k}"}
    if k % 2 == 0:
        fields["opportunity"] = item * 100 + k
    if k % 3 == 0:
        fields["comments"] = f"comment {k}"
    return fields


def plan(items: int, updates: int, order: str) -> list[dict[str, Any]]:
    """The commands in publish order, each item's updates in order."""
    if order == "round-robin":
        sequence = [item for _ in range(updates) for item in range(1, items + 1)]
    else:
        sequence = [item for item in range(1, items + 1) for _ in range(updates)]
        random.Random(20261206).shuffle(sequence)
    seen: dict[int, int] = {}
    commands = []
    for item in sequence:
        k = seen.get(item, 0)
        seen[item] = k + 1
        commands.append({"entityTypeId": DEAL, "id": item, "fields": fields_of(item, k)})
    return commands


def expected(items: int, updates: int) -> dict[int, dict[str, Any]]:
    final: dict[int, dict[str, Any]] = {}
    for item in range(1, items + 1):
        values: dict[str, Any] = {}
        for k in range(updates):
            values.update(fields_of(item, k))
        final[item] = values
    return final


def matches(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for name, value in wanted.items():
        if name == "opportunity":
            if not math.isclose(float(stored.get(name) or 0), float(value)):
                return False
        elif stored.get(name) != value:
            return False
    return True


def run(items: int, updates: int, order: str, coalesce: str, prefetch: int) -> str:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    total = items * updates
    with paced_sandbox(commands=items, burst=BURST, rate=RATE) as portal:
        env = worker_env(
            prefix,
            B24_WEBHOOK_URL=portal.webhook_url,
            B24_ALLOW_HTTP="true",
            B24_RATE_BURST=str(BURST),
            B24_RATE_PER_SECOND=str(RATE),
            COALESCE=coalesce,
            PREFETCH=str(prefetch),
        )
        asyncio.run(publish(f"{prefix}update", [(c, {}) for c in plan(items, updates, order)]))
        worker = WorkerProcess(env)
        try:
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                worker.log.read()
                if len(worker.log.ended) >= total or worker.process.poll() is not None:
                    break
                time.sleep(0.5)
        finally:
            worker.stop()
        first = worker.log.first
        ended = worker.log.ended
        took_s = ended[-1] - first if first is not None and ended else math.nan
        events = asyncio.run(drain(f"{prefix}result")) + asyncio.run(drain(f"{prefix}dead"))
        counters = portal.counters()
        stored = {
            item["id"]: item
            for item in httpx.get(f"{portal.base_url}/_sandbox/items/{DEAL}", timeout=60).json()
        }
    asyncio.run(delete_worker_queues(prefix))
    succeeded = [e for e in events if e["status"] == "succeeded"]
    coalesced = sum(1 for e in succeeded if e.get("coalescedWith"))
    superseded = sum(len(e.get("superseded", [])) for e in succeeded)
    distinct = len({e["messageId"] for e in events})
    wrong = [
        item
        for item, values in expected(items, updates).items()
        if not matches(stored.get(item, {}), values)
    ]
    calls = counters["calls"]
    ideal_off = max(0, math.ceil(total / 50) - BURST) / RATE
    return (
        f"COALESCE={coalesce} PREFETCH={prefetch} ({order}): {total} updates of {items} deals, "
        f"{distinct} outcomes ({len(succeeded)} succeeded); "
        f"{calls.get('batch', 0)} batch calls carrying {calls.get(METHOD, 0)} item updates, "
        f"{counters['saves']} saves, "
        f"{counters['query_limit_rejections']} rate-limit answers; {took_s:.1f} s "
        f"(one call per update at the portal's pace: {ideal_off:.0f} s); "
        f"coalesced {coalesced / total:.1%} of commands, {superseded} fields superseded; "
        f"items ending with their last values: {items - len(wrong)} of {items}"
        + (f" (wrong: {wrong[:5]})" if wrong else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--order", choices=["shuffled", "round-robin"], default="shuffled")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[300])
    args = parser.parse_args()
    lines = []
    for prefetch in args.prefetch:
        for coalesce in ("safe", "off"):
            line = run(args.items, args.updates, args.order, coalesce, prefetch)
            print(line, flush=True)
            lines.append(line)
    write_results("coalesce", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
