"""The baseline for the worker's throughput: a bare consume -> publish -> ack loop.

Durable classic queues and persistent messages; one channel with publisher
confirms and prefetch 200; for each delivery, concurrently: decode its JSON,
publish a persistent reply on the same channel and await the confirm, then
ack; the default asyncio event loop. It does no validation and calls no portal:
the most a consumer in Python can do on this broker.

    python bench/bare_loop.py [--count 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable

import aio_pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def run_bare_loop(
    count: int, *, at_edges: Callable[[], None] | None = None
) -> tuple[float, float]:
    """Returns (seconds from first delivery to last ack, CPU seconds spent meanwhile).

    ``at_edges`` is called at the first delivery and after the last ack, to
    take other measures over the same span.
    """
    source, sink = f"bare.{uuid.uuid4().hex[:8]}.in", f"bare.{uuid.uuid4().hex[:8]}.out"
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        feeder = await connection.channel()
        await feeder.declare_queue(source, durable=True)
        await feeder.declare_queue(sink, durable=True)
        for item_id in range(1, count + 1):
            body = {"entityTypeId": 2, "id": item_id, "fields": {"title": f"bench {item_id}"}}
            await feeder.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(body).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=source,
            )
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=200)
        queue = await channel.get_queue(source)
        done = asyncio.Event()
        handled = 0
        started: list[float] = []
        cpu_start: list[float] = []

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal handled
            if not started:
                if at_edges is not None:
                    at_edges()
                started.append(time.perf_counter())
                cpu_start.append(time.process_time())
            decoded = json.loads(message.body)
            reply = json.dumps({"id": decoded["id"], "status": "succeeded"}).encode()
            await channel.default_exchange.publish(
                aio_pika.Message(reply, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=sink,
            )
            await message.ack()
            handled += 1
            if handled == count:
                done.set()

        tag = await queue.consume(handle)
        await done.wait()
        elapsed = time.perf_counter() - started[0]
        cpu = time.process_time() - cpu_start[0]
        if at_edges is not None:
            at_edges()
        await queue.cancel(tag)  # before the queue goes, or the broker cancels it with a warning
        await feeder.queue_delete(source)
        await feeder.queue_delete(sink)
        return elapsed, cpu
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    elapsed, cpu = asyncio.run(run_bare_loop(args.count))
    print(
        f"bare loop: {args.count} messages in {elapsed:.2f} s: {args.count / elapsed:.0f}/s, "
        f"{cpu / args.count * 1e6:.0f} us CPU per message"
    )


if __name__ == "__main__":
    main()
