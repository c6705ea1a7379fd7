"""Running the tools as an operator does (`python -m worker ...`), on queues of
each test's own."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from tests.env import clean_env
from tests.worker.broker import connected, depth, drain, unique_topology
from worker.amqp.topology import Topology, declare

__all__ = [
    "Ran",
    "bodies",
    "declared_topology",
    "drain",
    "put",
    "run_tool",
    "tool_env",
    "until_depth",
]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def tool_env(amqp_url: str, topology: Topology | None = None, **values: str) -> dict[str, str]:
    """The environment of a tool run: no portal or queue settings leak in from outside."""
    env = clean_env(AMQP_URL=amqp_url)
    if topology is not None:
        env["UPDATE_QUEUE"] = topology.update_queue
        env["RESULT_QUEUE"] = topology.result_queue
        env["DEAD_LETTER_QUEUE"] = topology.dead_letter_queue
        env["RETRY_DELAYS_S"] = ",".join(str(delay) for delay in topology.retry_delays_s)
    env.update(values)
    return env


async def run_tool(
    *args: str,
    env: dict[str, str],
    timeout_s: float = 90.0,
    open_files: tuple[int, int] | None = None,
) -> Ran:
    """`b24-worker ARGS` in a subprocess, without blocking the test's event loop;
    ``open_files``: its soft and hard limits of open files."""

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limit,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


@asynccontextmanager
async def declared_topology(
    amqp_url: str,
) -> AsyncIterator[tuple[Topology, AbstractRobustConnection]]:
    """The worker's queues, declared under unique names and deleted afterwards."""
    topology = unique_topology()
    async with connected(amqp_url, topology) as connection:
        await declare(connection, topology)
        yield topology, connection


async def put(
    connection: AbstractRobustConnection, queue: str, bodies: list[bytes], **properties: Any
) -> None:
    """Publish bodies in order, persistent, each confirmed."""
    channel = await connection.channel(publisher_confirms=True)
    for body in bodies:
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),
            routing_key=queue,
        )
    await channel.close()


def bodies(messages: list[AbstractIncomingMessage]) -> list[Any]:
    return [json.loads(message.body) for message in messages]


async def until_depth(
    connection: AbstractRobustConnection, queue: str, at_least: int, *, timeout_s: float = 30.0
) -> None:
    """Wait until `queue` holds at least `at_least` ready messages."""
    for _ in range(int(timeout_s / 0.01)):
        if await depth(connection, queue) >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{queue} never held {at_least} messages")
