"""The worker with LIMITER_URL: the portal's bucket is in Redis, shared, and never bypassed.

Two workers in one process, each with its own Redis connection, serve one
sandbox portal whose bucket is small; the sandbox (which answers 503 to any
request its bucket cannot take) must count none. And when Redis goes away the
worker stops calling the portal, says so on /readyz, and carries on when
Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import control, events, eventually, running_worker, settings_for
from tests.worker.limiter.backends.proxy import Proxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.redis]

BURST, RATE = 6, 4.0


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    config = SandboxConfig(seed_items=60, rate_burst=BURST, rate_per_second=RATE)
    async with running_sandbox(config) as running:
        yield running


def counters(portal: RunningSandbox) -> dict[str, Any]:
    found: dict[str, Any] = control(portal, "GET", "counters")
    return found


def deal(item_id: int) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": {"title": f"shared {item_id}"}}


async def test_two_workers_share_one_bucket_and_the_portal_never_refuses(
    amqp_url: str, redis_url: str, portal: RunningSandbox
) -> None:
    # Single calls (BATCH_SIZE 1): 60 requests against a bucket of 6 draining 4/s.
    # Each worker alone would spend the whole burst, so two unshared ones overflow it.
    settings = settings_for(
        amqp_url,
        portal,
        LIMITER_URL=redis_url,
        BATCH_SIZE=1,
        B24_RATE_BURST=BURST,
        B24_RATE_PER_SECOND=RATE,
    )
    async with (
        running_worker(settings) as first,
        running_worker(settings),
        connected(amqp_url, first.topology) as broker,
    ):
        for item_id in range(1, 61):
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id))
        done = events(await take(broker, settings.RESULT_QUEUE, 60, timeout_s=60))
    assert sorted(event["id"] for event in done) == list(range(1, 61))
    seen = counters(portal)
    assert seen["query_limit_rejections"] == 0
    assert seen["requests"] >= 60


async def test_without_redis_the_worker_waits_and_says_why(
    amqp_url: str, redis_url: str, portal: RunningSandbox
) -> None:
    proxy = Proxy(redis_url)
    await proxy.open()
    settings = settings_for(amqp_url, portal, LIMITER_URL=proxy.url)
    try:
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
        ):
            await proxy.close()
            before = counters(portal)["requests"]
            await publish(broker, settings.UPDATE_QUEUE, deal(1), message_id=uuid.uuid4().hex)
            await eventually(lambda: worker.not_ready() == "limiter unreachable: default", 15)
            await asyncio.sleep(1.0)
            assert counters(portal)["requests"] == before  # nothing went out unpaced
            await proxy.open()
            [event] = events(await take(broker, settings.RESULT_QUEUE, 1, timeout_s=30))
            assert event["status"] == "succeeded"
            await eventually(lambda: worker.not_ready() is None, 15)
    finally:
        with contextlib.suppress(Exception):
            await proxy.close()
