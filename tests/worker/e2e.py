"""End-to-end harness: the worker in-process, against the real broker and a real
sandbox portal, each test on queues of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from sandbox.testing import RunningSandbox
from tests.env import clean_env
from tests.worker.broker import unique_topology
from worker.amqp.topology import Topology
from worker.runtime.app import Worker
from worker.settings import Settings


def settings_for(amqp_url: str, portal: RunningSandbox, **overrides: Any) -> Settings:
    topology = unique_topology()
    values: dict[str, Any] = {
        "AMQP_URL": amqp_url,
        "B24_WEBHOOK_URL": portal.webhook_url,
        "UPDATE_QUEUE": topology.update_queue,
        "RESULT_QUEUE": topology.result_queue,
        "DEAD_LETTER_QUEUE": topology.dead_letter_queue,
        "RETRY_DELAYS_S": "1,1,1",
        "HTTP_PORT": 0,
        "BATCH_LINGER_MS": 20,
        "LOG_LEVEL": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    worker = Worker(settings)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.drain()


def control(portal: RunningSandbox, method: str, path: str, body: Any = None) -> Any:
    answer = httpx.request(method, f"{portal.control_url}/{path}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json() if answer.content else None


def force_error(
    portal: RunningSandbox, error: str, *, item_id: int, times: int | None = None
) -> None:
    """Make the sandbox answer `error` for deal `item_id` (`times` times, or always)."""
    rule: dict[str, Any] = {"error": error, "entity_type_id": 2, "item_id": item_id}
    if times is not None:
        rule["times"] = times
    control(portal, "PATCH", "faults", {"item_errors": [rule]})


def stored(portal: RunningSandbox, entity_type_id: int, item_id: int) -> dict[str, Any]:
    item: dict[str, Any] = control(portal, "GET", f"items/{entity_type_id}/{item_id}")
    return item


def events(messages: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(message.body) for message in messages]


async def eventually(check: Any, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def process_env(
    amqp_url: str, webhook_url: str, topology: Topology, **extra: str
) -> dict[str, str]:
    """The environment of `python -m worker run` on these queues and this portal,
    with JSON logs written unbuffered (a SIGKILL loses no line)."""
    env = clean_env()
    env.update(
        AMQP_URL=amqp_url,
        B24_WEBHOOK_URL=webhook_url,
        UPDATE_QUEUE=topology.update_queue,
        RESULT_QUEUE=topology.result_queue,
        DEAD_LETTER_QUEUE=topology.dead_letter_queue,
        RETRY_DELAYS_S=",".join(str(delay) for delay in topology.retry_delays_s),
        HTTP_PORT="0",
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env
