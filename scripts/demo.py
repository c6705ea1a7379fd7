"""Part of `make demo`: the worker applying the sample commands to the sandbox portal.

Starts `b24-worker sandbox` and `b24-worker run` (on queues of the demo's own),
publishes examples/commands.jsonl and examples/invalid-commands.jsonl, prints
the outcome of every message as the worker reported it, then stops both and
removes the demo's queues. Exits 1 if any outcome is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def samples() -> list[tuple[str, bytes]]:
    bodies = []
    for name in ("commands.jsonl", "invalid-commands.jsonl"):
        lines = (ROOT / "examples" / name).read_bytes().splitlines()
        bodies += [(f"{name.split('.')[0]}:{n}", line) for n, line in enumerate(lines, 1) if line]
    return bodies


async def exchange(prefix: str, bodies: list[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    for label, body in bodies:
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=label,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"{prefix}update",
        )
    outcomes: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(outcomes) < len(bodies) and time.monotonic() < deadline:
        got = False
        for queue in ("result", "dead"):
            source = await channel.get_queue(f"{prefix}{queue}")
            message = await source.get(fail=False)
            if message is not None:
                event = json.loads(message.body)
                outcomes[event["messageId"]] = event
                await message.ack()
                got = True
        if not got:
            await asyncio.sleep(0.1)
    await connection.close()
    return outcomes


async def remove_queues(prefix: str) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    for name in ("update", "update.poison", "update.retry", "update.retry.5s", "result", "dead"):
        await channel.queue_delete(f"{prefix}{name}")
    await connection.close()


def describe(event: dict[str, Any]) -> str:
    if event["status"] == "succeeded":
        extra = []
        if event["ignoredFields"]:
            extra.append(f"ignored: {', '.join(event['ignoredFields'])}")
        if event["notApplied"]:
            extra.append(f"not applied: {', '.join(event['notApplied'])}")
        title = event["item"].get("title")
        shown = f" title={title!r}" if title else ""
        return f"succeeded (attempts {event['attempts']}){shown}" + (
            f"; {'; '.join(extra)}" if extra else ""
        )
    error = event["error"]
    return f"failed: {error['class']} {error['code']}: {error['description']}"


def main() -> int:
    port = free_port()
    prefix = f"demo.{uuid.uuid4().hex[:6]}."
    portal = subprocess.Popen(
        [sys.executable, "-m", "worker", "sandbox", "--port", str(port), "--seed", "400"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/_sandbox/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        env = {
            **os.environ,
            "AMQP_URL": AMQP_URL,
            "B24_WEBHOOK_URL": f"http://127.0.0.1:{port}/rest/1/sandboxwebhook01/",
            "UPDATE_QUEUE": f"{prefix}update",
            "RESULT_QUEUE": f"{prefix}result",
            "DEAD_LETTER_QUEUE": f"{prefix}dead",
            "RETRY_DELAYS_S": "5",
            "HTTP_PORT": "0",
            "LOG_LEVEL": "WARNING",
        }
        worker = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env)
        time.sleep(1.5)  # the worker declares its queues before the commands are published
        bodies = samples()
        outcomes = asyncio.run(exchange(prefix, bodies))
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        portal.send_signal(signal.SIGTERM)
        portal.wait(timeout=30)
        asyncio.run(remove_queues(prefix))
    width = max(len(label) for label, _ in bodies)
    for label, _ in bodies:
        event = outcomes.get(label)
        print(f"{label:<{width}}  {describe(event) if event else 'NO OUTCOME SEEN'}")
    missing = [label for label, _ in bodies if label not in outcomes]
    print(
        f"\n{len(outcomes)} outcomes for {len(bodies)} messages"
        + (f"; missing: {', '.join(missing)}" if missing else "")
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
