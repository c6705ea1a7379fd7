"""Latency from queue to outcome, at a steady rate the worker keeps up with.

    python bench/latency.py [--rate 500] [--seconds 30]

Real processes: the sandbox with limits off and `b24-worker run` (JSON logs
on, default BATCH_LINGER_MS and PREFETCH), the broker at AMQP_URL. Once the
worker logs that it consumes, this process publishes updates at a steady
rate on a connection of its own (persistent messages, no waiting for
confirms) and consumes the worker's success events from RESULT_QUEUE on
another. A message's latency is the time its event arrived here less the
time it was handed to the client library for publishing, both read from
this process's monotonic clock and matched by message id. The first second's
messages (the warm-up) are left out.

The worker's garbage collector is timed as in bench/worker_pacing.py, and
BENCH_GC_THRESHOLD tries other thresholds there too (its own results file).

The rate is meant to sit well under what the worker can do (about 2,000/s
with limits off on two cores), so the figure is the path's own delay, not a
backlog's. This process shares the machine: publishing and receiving cost
it CPU, and its own scheduling delay is part of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import aio_pika

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector import GcProbe, gc_lines
from harness import (
    AMQP_URL,
    Sandbox,
    WorkerProcess,
    delete_queues,
    drain,
    load_average,
    queue_names,
    worker_env,
    write_results,
)
from worker_pacing import NO_LIMITS_ENV

SEEDED = 5_000


async def publish_steadily(
    update_queue: str, result_queue: str, *, rate_per_s: float, seconds: float
) -> tuple[dict[str, float], dict[str, float], float]:
    """Returns (publish time by id, event time by id, seconds publishing took)."""
    total = round(rate_per_s * seconds)
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    all_in = asyncio.Event()

    async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived = time.monotonic()
        received[json.loads(message.body)["messageId"]] = arrived
        if len(received) >= total:
            all_in.set()

    listening = await aio_pika.connect(AMQP_URL)
    publishing = await aio_pika.connect(AMQP_URL)
    try:
        events = await (await listening.channel()).get_queue(result_queue)
        await events.consume(on_event, no_ack=True)
        exchange = (await publishing.channel(publisher_confirms=False)).default_exchange
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            message_id = f"lat{i}"
            body = {"entityTypeId": 2, "id": i % SEEDED + 1, "fields": {"title": f"latency {i}"}}
            message = aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                message_id=message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            sent[message_id] = time.monotonic()
            await exchange.publish(message, routing_key=update_queue)
        publishing_s = time.monotonic() - start
        with contextlib.suppress(TimeoutError):  # what never came is reported as missing
            await asyncio.wait_for(all_in.wait(), timeout=120)
        return sent, received, publishing_s
    finally:
        await publishing.close()
        await listening.close()


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="messages published per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to publish")
    args = parser.parse_args()
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    threshold = os.environ.get("BENCH_GC_THRESHOLD")
    lines = [
        f"latency from publish to success event; {args.rate:g} messages/s for {args.seconds:g} s",
        *([f"experiment: the worker's gc thresholds set to {threshold}"] if threshold else []),
        f"{load_average()} at the start",
    ]
    worker: WorkerProcess | None = None
    with Sandbox(["--seed", str(SEEDED), "--spa-types", "", "--no-limits"]) as portal:
        try:
            probe = GcProbe()
            settings = {"B24_WEBHOOK_URL": portal.webhook_url, **NO_LIMITS_ENV}
            worker = WorkerProcess(worker_env(prefix, **settings, **probe.settings()))
            deadline = time.monotonic() + 60
            while worker.log.first is None and time.monotonic() < deadline:
                time.sleep(0.05)
                worker.log.read()
                if worker.process.poll() is not None:
                    raise SystemExit(f"the worker exited; its log: {worker.log.path}")
            sent, received, publishing_s = asyncio.run(
                publish_steadily(
                    f"{prefix}update",
                    f"{prefix}result",
                    rate_per_s=args.rate,
                    seconds=args.seconds,
                )
            )
            lines.append(f"{load_average()} at the end")
            exit_code = worker.stop()
            gc_record = probe.record(worker.pid)
            dead = asyncio.run(drain(f"{prefix}dead"))
            counters = portal.counters()
        finally:
            if worker is not None:
                worker.stop()
            asyncio.run(delete_queues(queue_names(prefix)))
    warm_up = round(args.rate)
    measured = sorted(
        (received[mid] - sent[mid]) * 1000
        for i, mid in enumerate(sent)
        if i >= warm_up and mid in received
    )
    missing = len(sent) - len(received)
    calls = counters["calls"]
    per_call = calls.get("crm.item.update", 0) / max(1, calls.get("batch", 0))
    lines += [
        f"published {len(sent)} in {publishing_s:.2f} s ({len(sent) / publishing_s:.0f}/s); "
        f"events received {len(received)}; missing {missing}; failures {len(dead)}; "
        f"worker exit code {exit_code}",
        f"worker settings: BATCH_LINGER_MS 50, PREFETCH 300 (defaults); the sandbox saw "
        f"{calls.get('batch', 0)} batch calls, {per_call:.1f} updates per call",
        f"latency over {len(measured)} messages (first {warm_up} left out): "
        f"p50 {percentile(measured, 0.5):.1f} ms, p90 {percentile(measured, 0.9):.1f} ms, "
        f"p99 {percentile(measured, 0.99):.1f} ms, max {measured[-1]:.1f} ms, "
        f"mean {statistics.fmean(measured):.1f} ms",
        *gc_lines(gc_record),
        f"worker log: {worker.log.path if worker else '-'}",
    ]
    suffix = "-gc" + threshold.replace(",", "_") if threshold else ""
    write_results(f"latency-{args.rate:g}per_s{suffix}", lines)
    return 0 if not missing and not dead else 1


if __name__ == "__main__":
    sys.exit(main())
