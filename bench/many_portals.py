"""Two hundred portals through one worker, ten of them blocked at the start.

    python bench/many_portals.py [--portals 200] [--commands 300] [--blocked 10]

One sandbox process serves the portals (`b24-worker sandbox --portals N`),
each on a port of its own, at burst 2 and 0.1 requests/s, with 300 deals
each; the worker gets them from a B24_PORTALS_FILE with those limits,
BATCH_SIZE 50, every other setting at its default. All commands are queued
through the headers exchange before the worker starts, interleaved round-robin
by portal; the first `--blocked` portals answer OVERLOAD_LIMIT until 20 s
after the worker process starts. The clock starts with the worker process.

A portal's ideal is (ceil(N / 50) - burst) / rate seconds (40 s here) and its
share is ideal / (time of its last outcome). Printed: the healthy portals'
median and lowest shares with the lowest ten, the blocked portals' failure
events and last outcomes, the worker's peak RSS and its CPU per command.

Targets (exit status 1 when missed): median share of the healthy portals at
least 0.95, none below 0.90, no failure event for a blocked portal, every
command ended once, no QUERY_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from schemas.wire import PORTAL_HEADER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    AMQP_URL,
    WorkerProcess,
    declare,
    delete_worker_queues,
    drain,
    portal_queue_names,
    wait_for,
    worker_env,
    write_results,
)
from usage import load_average

BATCH = 50
BURST = 2
RATE = 0.1
BLOCKED_FOR_S = 20.0
CONFIRM_WINDOW = 500  # publishes awaiting their confirms at once


PACED = (
    "--rate-burst", str(BURST), "--rate-per-second", str(RATE),
    # Under the portal's 0.1 s charging floor: the request bucket alone binds.
    "--operating-cost-s", "0.05",
)  # fmt: skip


def start_sandbox(
    portals: int, commands: int, listing: Path, options: Sequence[str] = PACED
) -> subprocess.Popen[bytes]:
    """`sandbox --portals` (each portal on a free port of its own, with ``options``),
    once it has written their webhooks to ``listing``."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "worker", "sandbox", "--port", "0",
            "--portals", str(portals), "--portals-file", str(listing),
            "--seed", str(commands), "--spa-types", "", *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not listing.exists() or not listing.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the sandbox did not start")
        time.sleep(0.1)
    return process


def control_url(webhook_url: str) -> str:
    scheme, rest = webhook_url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}/_sandbox"


def faults(webhook_url: str, **values: Any) -> None:
    httpx.patch(f"{control_url(webhook_url)}/faults", json=values, timeout=10).raise_for_status()


async def publish(exchange: str, commands: list[tuple[dict[str, Any], str]]) -> int:
    """Through the exchange, confirmed, CONFIRM_WINDOW at a time.

    Unconfirmed publishing was faster but not safe: a quorum queue may refuse a
    message, and only a confirming publisher hears of it (198 of 60,000 went
    missing once, and the run waited for them until its timeout)."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange)
    for start in range(0, len(commands), CONFIRM_WINDOW):
        window = commands[start : start + CONFIRM_WINDOW]
        await asyncio.gather(
            *(
                target.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        content_type="application/json",
                        message_id=f"m{n}",
                        headers={PORTAL_HEADER: portal},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=f"2:{body['id']}",
                )
                for n, (body, portal) in enumerate(window, start=start + 1)
            )
        )
    await connection.close()
    return len(commands)


async def queued(queues: list[str]) -> int:
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    total = 0
    for name in queues:
        declared = await channel.declare_queue(name, passive=True)
        total += declared.declaration_result.message_count or 0
    await connection.close()
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portals", type=int, default=200)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--blocked", type=int, default=10)
    args = parser.parse_args()
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    workdir = Path(tempfile.mkdtemp(prefix="many-portals-"))
    listing = workdir / "sandbox-portals.json"
    sandbox = start_sandbox(args.portals, args.commands, listing)
    webhooks = {key: value["webhook_url"] for key, value in json.loads(listing.read_text()).items()}
    keys = sorted(webhooks, key=lambda key: int(key.removeprefix("portal")))
    blocked = set(keys[: args.blocked])
    config = workdir / "worker-portals.json"
    config.write_text(
        json.dumps(
            {
                key: {"webhook_url": url, "rate_burst": BURST, "rate_per_second": RATE}
                for key, url in webhooks.items()
            }
        )
    )
    env = worker_env(prefix, BATCH_SIZE=str(BATCH), B24_PORTALS_FILE=str(config))
    portal_queues = portal_queue_names(prefix, keys)
    worker: WorkerProcess | None = None
    unblock: threading.Timer | None = None
    try:
        asyncio.run(declare(env))
        owner: list[str] = []
        commands: list[tuple[dict[str, Any], str]] = []
        for i in range(1, args.commands + 1):
            for key in keys:
                commands.append(
                    ({"entityTypeId": 2, "id": i, "fields": {"title": f"{key} {i}"}}, key)
                )
                owner.append(key)
        total = asyncio.run(publish(f"{prefix}update", commands))
        while asyncio.run(queued(portal_queues)) < total:
            time.sleep(0.5)
        for key in blocked:
            faults(webhooks[key], overload=True)
        load = load_average()
        start = time.time()
        worker = WorkerProcess(env)
        unblock = threading.Timer(
            BLOCKED_FOR_S, lambda: [faults(webhooks[key], overload=False) for key in blocked]
        )
        unblock.start()
        wait_for([worker], total)
        cpu_s, peak = worker.cpu_s(), worker.peak_rss_mib()
        code = worker.stop()
        worker.log.read()
        events = asyncio.run(drain(f"{prefix}result")) + asyncio.run(drain(f"{prefix}dead"))
        counters = {
            key: httpx.get(f"{control_url(url)}/counters", timeout=10).json()
            for key, url in webhooks.items()
        }
        limited = sum(c["query_limit_rejections"] for c in counters.values())
    finally:
        if unblock is not None:
            unblock.cancel()
        if worker is not None and worker.process.poll() is None:
            worker.process.kill()
        sandbox.terminate()
        sandbox.wait(timeout=30)
        asyncio.run(delete_worker_queues(prefix, keys))
    ideal = (math.ceil(args.commands / BATCH) - BURST) / RATE
    counts = Counter(str(event["messageId"]) for event in events)
    statuses: dict[str, set[str]] = {}
    for event in events:
        statuses.setdefault(str(event["messageId"]), set()).add(str(event["status"]))
    ended = {f"m{n}" for n in range(1, total + 1)} <= set(statuses)
    failed = Counter(owner[int(m[1:]) - 1] for m, s in statuses.items() if "failed" in s)
    shares = {}
    for key in keys:
        ends = worker.log.ended_by_portal.get(key, []) if worker else []
        shares[key] = ideal / (max(ends) - start) if ends else 0.0
    healthy = sorted((shares[key], key) for key in keys if key not in blocked)
    # When each healthy portal's first call arrived, and how long its calls took from
    # there: the start's cost and the pacing's, apart.
    firsts = [
        counters[key]["first_request_at"] - start
        for _, key in healthy
        if counters[key]["first_request_at"]
    ]
    spans = [
        counters[key]["last_request_at"] - counters[key]["first_request_at"]
        for _, key in healthy
        if counters[key]["first_request_at"]
    ]
    median = statistics.median(share for share, _ in healthy)
    blocked_last = max(
        (max(worker.log.ended_by_portal.get(key, [start])) - start for key in blocked), default=0
    )
    lines = [
        f"{args.portals} portals (one sandbox process), burst {BURST}, {RATE:g}/s, "
        f"{args.commands} commands each (ideal {ideal:g} s), {args.blocked} blocked for their "
        f"first {BLOCKED_FOR_S:g} s; one worker; BATCH_SIZE {BATCH}; clock from its start",
        f"{load} at the start",
        f"commands: {total}; every one ended: {'yes' if ended else 'NO'}; duplicates "
        f"{sum(counts.values()) - len(counts)}; worker exit code {code}",
        f"healthy portals: median share {median:.3f}, lowest {healthy[0][0]:.3f}; lowest ten: "
        + ", ".join(f"{key} {share:.2f}" for share, key in healthy[:10]),
        f"healthy portals' first call arrived at {min(firsts):.2f} s at the earliest, median "
        f"{statistics.median(firsts):.2f} s, latest {max(firsts):.2f} s; from their first "
        f"call to their last: median {statistics.median(spans):.2f} s, longest "
        f"{max(spans):.2f} s",
        f"blocked portals: {sum(failed[key] for key in blocked)} failure events; last outcome "
        f"at {blocked_last:.1f} s",
        f"failure events in all: {sum(failed.values())}; QUERY_LIMIT_EXCEEDED: {limited}",
        f"worker: peak RSS {peak:.0f} MiB; CPU {cpu_s:.1f} s, {cpu_s / total * 1e6:.0f} "
        "microseconds per command",
    ]
    ok = (
        ended
        and median >= 0.95
        and healthy[0][0] >= 0.90
        and not any(failed[key] for key in blocked)
        and limited == 0
        and sum(counts.values()) == len(counts)
    )
    lines.append(f"targets met: {'yes' if ok else 'NO'}")
    write_results("many_portals", lines)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
