"""How replicas started together share the shards out.

    python bench/shard_split.py                 # 4, 6 and 12 shards, 5 runs each
    python bench/shard_split.py 6 --runs 10     # these counts
    --workers 3                                 # replicas started together

For each count N: a fresh set of queues (`SHARDS` N, everything else at its
default, one sandbox portal that no worker calls), then `--workers` worker
processes started one right after the other, as a deployment rolls them out.
Printed per run: the shards each worker claimed, from its `consumer.shards`
line, largest first. A worker claims a shard under a lock, so what it claimed
is what the broker delivers to it; the shards a worker left for the others and
registered on at the end of its claim window (taken by whoever registered
first) are not counted. Then how many runs split the shards as evenly as they
divide.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Sandbox, WorkerProcess, delete_queues, queue_names, worker_env, write_results


def claimed(worker: WorkerProcess) -> int | None:
    """The shards the worker claimed, once its log says so."""
    for line in worker.log.path.read_text().splitlines():
        if '"consumer.shards"' in line:
            return len(json.loads(line)["claimed"])
    return None


def run_once(sandbox: Sandbox, shards: int, workers: int) -> list[int]:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    env = worker_env(
        prefix,
        B24_WEBHOOK_URL=sandbox.webhook_url,
        SHARDS=str(shards),
        DRAIN_TIMEOUT_S="2",
    )
    started = [WorkerProcess(env) for _ in range(workers)]
    try:
        deadline = time.monotonic() + 60
        counts = [claimed(worker) for worker in started]
        while None in counts and time.monotonic() < deadline:
            time.sleep(0.2)
            counts = [claimed(worker) for worker in started]
    finally:
        for worker in started:
            worker.stop()
        shard_queues = [f"{prefix}update.shard.{index}" for index in range(shards)]
        asyncio.run(
            delete_queues([*queue_names(prefix), *shard_queues], exchanges=[f"{prefix}update"])
        )
    if None in counts:
        raise SystemExit(f"a worker logged no consumer.shards line within 60 s: {counts}")
    return sorted((count for count in counts if count is not None), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="*", type=int, default=[4, 6, 12])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    lines = [
        f"{args.workers} worker processes started together; every setting but SHARDS at its default"
    ]
    with Sandbox(["--seed", "5"]) as sandbox:
        for shards in args.shards:
            splits = [run_once(sandbox, shards, args.workers) for _ in range(args.runs)]
            even = sorted(
                (shards // args.workers + (1 if n < shards % args.workers else 0))
                for n in range(args.workers)
            )[::-1]
            seen = Counter("/".join(map(str, split)) for split in splits)
            lines.append(
                f"{shards} shards: "
                + ", ".join(f"{split} in {count} of {args.runs}" for split, count in seen.items())
                + f"; as even as they divide ({'/'.join(map(str, even))}): "
                + f"{sum(split == even for split in splits)} of {args.runs}"
            )
    write_results("shard_split", lines)


if __name__ == "__main__":
    main()
