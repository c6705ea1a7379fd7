"""The broker drops the worker's connections: the worker consumes again and finishes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import events, running_worker, settings_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.reliability]


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=40, limits_enabled=False)) as running:
        yield running


def deal(item_id: int, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": fields}


async def publish_when_back(broker: Any, queue: str, body: dict[str, Any]) -> None:
    """The test's own connection was closed too: publish once it is back."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await publish(broker, queue, body)
            return
        except (RuntimeError, ConnectionError, aio_pika.exceptions.AMQPError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_after_the_broker_closes_every_connection_the_worker_consumes_again(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    async with running_worker(settings) as worker, connected(amqp_url, worker.topology) as broker:
        for item_id in range(1, 11):
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id, title="before"))
        before = events(await take(broker, settings.RESULT_QUEUE, 10))
        closed = await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "close_all_connections", "connection test"],
            capture_output=True,
            timeout=60,
        )
        assert closed.returncode == 0, closed.stderr
        accepting = time.monotonic()
        for item_id in range(11, 31):
            await publish_when_back(broker, settings.UPDATE_QUEUE, deal(item_id, title="after"))
        after = events(await take(broker, settings.RESULT_QUEUE, 20, timeout_s=30))
        took = time.monotonic() - accepting
    assert sorted(e["id"] for e in before) == list(range(1, 11))
    assert sorted(e["id"] for e in after) == list(range(11, 31))
    assert all(e["status"] == "succeeded" for e in before + after)
    assert took < 10 + 5  # consuming again within 10 s, plus the updates themselves
