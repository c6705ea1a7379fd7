"""The broker drops the worker's connections: the worker consumes again and finishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.conftest import BrokerControl
from tests.worker.broker import connected, drain, publish, take
from tests.worker.e2e import control, events, eventually, running_worker, settings_for

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
    amqp_url: str, portal: RunningSandbox, broker_control: BrokerControl
) -> None:
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        for item_id in range(1, 11):
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id, title="before"))
        before = events(await take(broker, settings.RESULT_QUEUE, 10))
        await asyncio.to_thread(
            broker_control.rabbitmqctl, "close_all_connections", "connection test"
        )
        accepting = time.monotonic()
        for item_id in range(11, 31):
            await publish_when_back(broker, settings.UPDATE_QUEUE, deal(item_id, title="after"))
        after = events(await take(broker, settings.RESULT_QUEUE, 20, timeout_s=30))
        took = time.monotonic() - accepting
    assert sorted(e["id"] for e in before) == list(range(1, 11))
    assert sorted(e["id"] for e in after) == list(range(11, 31))
    assert all(e["status"] == "succeeded" for e in before + after)
    assert took < 10 + 5  # consuming again within 10 s, plus the updates themselves


async def test_while_the_broker_blocks_publishers_the_worker_waits_and_loses_nothing(
    amqp_url: str, portal: RunningSandbox, broker_control: BrokerControl
) -> None:
    """A memory alarm blocks every publishing connection: the worker's events wait
    unconfirmed and their deliveries stay unacked, then all go out once it clears."""
    rabbitmqctl = broker_control.rabbitmqctl
    watermark = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    settings = settings_for(amqp_url, portal)
    control(portal, "PATCH", "faults", {"latency_ms": 1500})
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        for item_id in range(1, 6):
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id, title="blocked"))
        sample = worker.metrics.registry.get_sample_value
        await eventually(lambda: (sample("b24_batch_size_count") or 0) > 0, 10)  # a call is out
        try:
            await asyncio.to_thread(rabbitmqctl, "set_vm_memory_high_watermark", "0.0000001")
            # The answers come back 1.5 s after the calls left; confirming an event
            # takes a millisecond or two. A call still out a second after its answer
            # is waiting for the broker's confirms.
            await eventually(lambda: (sample("b24_api_latency_seconds_count") or 0) >= 1, 10)
            await asyncio.sleep(1.0)
            assert worker.pipeline.calls_out >= 1
            assert worker.metrics.total("b24_succeeded_total") == 0
            looking = await aio_pika.connect_robust(amqp_url)  # has not published: not blocked
            try:
                assert await drain(looking, settings.RESULT_QUEUE) == []
            finally:
                await looking.close()
        finally:
            await asyncio.to_thread(rabbitmqctl, "set_vm_memory_high_watermark", watermark)
        done = events(await take(broker, settings.RESULT_QUEUE, 5, timeout_s=30))
        # The worker holds nothing more and has no call out: no second event can come.
        await eventually(
            lambda: worker.pipeline.held == worker.pipeline.calls_out == worker.acks.pending == 0
        )
        assert worker.metrics.total("b24_succeeded_total") == 5
        assert await drain(broker, settings.RESULT_QUEUE) == []
    assert sorted(e["id"] for e in done) == [1, 2, 3, 4, 5]
    assert all(e["status"] == "succeeded" for e in done)
