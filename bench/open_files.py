"""One worker, many busy portals, under set limits of open files.

    python bench/open_files.py [--portals 60] [--commands 300] [--limits 128:20000 128:128]

One sandbox process serves the portals (`b24-worker sandbox --portals N`, each
on a free port of its own), limits off and 300 ms per answer, so that every
portal has its calls out at once. The worker reads them from a
B24_PORTALS_FILE, BATCH_SIZE 50, RETRY_DELAYS_S 1,2 and every other setting at
its default; its process starts with each SOFT:HARD limit of open files in
turn. All commands are queued through the headers exchange before it starts.

Printed per limit: the limit the worker reports running with (`worker.started`),
how many commands succeeded and how long they took from the worker's start,
how many it sent to a delay tier and why, and its `open_files.low` and
`process.out_of_files` lines. Each portal keeps up to 5 HTTP connections, so
60 portals need about 380 descriptors. A call that cannot open a connection
for want of one uses no attempt: its commands wait a second and go again, so
a limit short of the need makes the run slower, not its commands fail
(docs/operations.md, "Out of open files").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    WorkerProcess,
    delete_queues,
    portal_queue_names,
    queue_names,
    worker_env,
    write_results,
)
from harness import (
    declare as declare_topology,
)
from many_portals import publish, start_sandbox

DELAYS = (1, 2)
TIMEOUT_S = 120.0


def run(portals: int, commands: int, soft: int, hard: int) -> str:
    listing = Path(tempfile.mkdtemp()) / "portals.json"
    sandbox = start_sandbox(portals, commands, listing, ("--no-limits", "--latency-ms", "300"))
    keys = list(json.loads(listing.read_text()))
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    env = worker_env(
        prefix,
        B24_PORTALS_FILE=str(listing),
        BATCH_SIZE="50",
        RETRY_DELAYS_S=",".join(map(str, DELAYS)),
    )
    worker = None
    try:
        asyncio.run(declare_topology(env))
        bodies = [
            ({"entityTypeId": 2, "id": item, "fields": {"title": f"t{item}"}}, key)
            for item in range(1, commands + 1)
            for key in keys
        ]
        asyncio.run(publish(f"{prefix}update", bodies))
        worker = WorkerProcess(env, open_files=(soft, hard))
        started_at = time.monotonic()
        deadline = started_at + TIMEOUT_S
        while time.monotonic() < deadline and worker.process.poll() is None:
            time.sleep(0.2)
            worker.log.read()
            if len(worker.log.ended) >= len(bodies):
                break
        took_s = time.monotonic() - started_at
    finally:
        if worker is not None:
            worker.stop()
        sandbox.terminate()
        sandbox.wait(30)
        asyncio.run(
            delete_queues(
                [*queue_names(prefix, DELAYS), *portal_queue_names(prefix, keys)],
                exchanges=[f"{prefix}update", f"{prefix}update.unrouted"],
            )
        )
    lines = worker.log.path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line[:1] == "{"]
    outcomes = Counter(str(e.get("outcome")) for e in events if e.get("event") == "message.settled")
    started = next((e for e in events if e.get("event") == "worker.started"), {})
    low = [e for e in events if e.get("event") == "open_files.low"]
    out = [e for e in events if e.get("event") == "process.out_of_files"]
    said = f"; open_files.low: limit {low[0]['limit']}, needed {low[0]['needed']}" if low else ""
    why = Counter(
        str(e.get("reason"))
        for e in events
        if e.get("event") == "message.settled" and e.get("outcome") == "retried"
    )
    reasons = f" ({', '.join(f'{n} {reason}' for reason, n in why.most_common())})" if why else ""
    return (
        f"limits {soft}:{hard}: the worker runs with {started.get('open_files')}; "
        f"{outcomes['succeeded']} of {len(bodies)} succeeded in {took_s:.1f} s, "
        f"{outcomes['failed']} failed, "
        f"{outcomes['retried']} sent to a delay tier{reasons}; {len(low)} open_files.low and "
        f"{len(out)} process.out_of_files lines{said}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portals", type=int, default=60)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--limits", nargs="+", default=["128:20000", "128:128"])
    args = parser.parse_args()
    lines = [
        f"{args.portals} portals (one sandbox process, limits off, 300 ms per answer), "
        f"{args.commands} commands each; one worker, BATCH_SIZE 50"
    ]
    for pair in args.limits:
        soft, hard = (int(value) for value in pair.split(":"))
        lines.append(run(args.portals, args.commands, soft, hard))
    write_results("open_files", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
