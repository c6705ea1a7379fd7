"""Without Redis the shared limiter pauses: no token is granted until Redis answers again."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis
from structlog.testing import LogCapture

from tests.worker.limiter.backends.proxy import Proxy
from worker.limiter import PACER_STATE, Availability, RedisBackend, RequestPacer, SystemClock
from worker.limiter.backends import availability as availability_module


class Pauses:
    """Stands in for ``asyncio.sleep``: records each pause and tells when there were enough."""

    def __init__(self) -> None:
        self.taken: list[float] = []
        self._wanted = 0
        self._enough = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)
        if len(self.taken) >= self._wanted:
            self._enough.set()
        await asyncio.sleep(seconds)

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` more pauses have started."""
        self._wanted = len(self.taken) + count
        self._enough.clear()
        await asyncio.wait_for(self._enough.wait(), 10)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> list[MutableMapping[str, Any]]:
    """The limiter's log lines during the test."""
    capture = LogCapture()
    logger = structlog.wrap_logger(None, processors=[capture], wrapper_class=structlog.BoundLogger)
    monkeypatch.setattr(availability_module, "log", logger)
    return capture.entries


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(redis_url)
    await proxy.open()
    yield proxy
    await proxy.close()


@pytest.mark.redis
async def test_acquire_waits_while_redis_is_unreachable_and_proceeds_when_it_is_back(
    proxy: Proxy, redis: Redis, scope: str, logs: list[MutableMapping[str, Any]]
) -> None:
    pauses = Pauses()
    availability = Availability(scope=scope, retry_initial_s=0.01, retry_max_s=0.04, sleep=pauses)
    client = Redis.from_url(proxy.url)
    backend = RedisBackend(client, scope=scope, codec=PACER_STATE, availability=availability)
    pacer = RequestPacer(burst=5, rate_per_s=10.0, clock=SystemClock(), backend=backend)
    try:
        await pacer.acquire()
        key = backend.key("portal")
        version = await redis.hget(key, "version")

        await proxy.close()
        waiting = asyncio.create_task(pacer.acquire())
        await pauses.wait_for(5)
        assert not waiting.done()
        assert not backend.reachable
        assert await redis.hget(key, "version") == version  # nothing taken meanwhile
        assert pauses.taken[:4] == [0.01, 0.02, 0.04, 0.04]

        await proxy.open()
        await asyncio.wait_for(waiting, 10)
        assert backend.reachable
        assert await redis.hget(key, "version") != version
    finally:
        await client.aclose()
    events = [entry["event"] for entry in logs]
    assert events == ["limiter.unavailable", "limiter.recovered"]
    assert logs[0]["scope"] == scope


@pytest.mark.redis
async def test_a_wait_for_redis_can_be_cancelled_and_its_logs_hold_no_password(
    scope: str, logs: list[MutableMapping[str, Any]]
) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    client = Redis.from_url(f"redis://:S3cretPw@127.0.0.1:{port}/0")
    pauses = Pauses()
    availability = Availability(scope=scope, retry_initial_s=0.01, retry_max_s=0.02, sleep=pauses)
    backend = RedisBackend(client, scope=scope, codec=PACER_STATE, availability=availability)
    pacer = RequestPacer(burst=5, rate_per_s=10.0, clock=SystemClock(), backend=backend)
    try:
        waiting = asyncio.create_task(pacer.acquire())
        await pauses.wait_for(3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await client.aclose()
    assert [entry["event"] for entry in logs] == ["limiter.unavailable"]
    assert "S3cretPw" not in repr(logs)


async def test_a_redis_that_does_not_answer_counts_as_unreachable_after_the_timeout(
    logs: list[MutableMapping[str, Any]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the commands, answers none
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    pauses = Pauses()
    availability = Availability(scope="portal.example.com", timeout_s=0.05, sleep=pauses)
    backend = RedisBackend(
        client, scope="portal.example.com", codec=PACER_STATE, availability=availability
    )
    try:
        pacer = RequestPacer(burst=5, rate_per_s=10.0, clock=SystemClock(), backend=backend)
        waiting = asyncio.create_task(pacer.acquire())
        await pauses.wait_for(1)
        assert not waiting.done()
        assert not backend.reachable
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert logs[0]["event"] == "limiter.unavailable"
    assert logs[0]["error"] == "TimeoutError"


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Availability(scope="portal.example.com", timeout_s=0.0)
    with pytest.raises(ValueError, match="retry_max_s"):
        Availability(scope="portal.example.com", retry_initial_s=1.0, retry_max_s=0.5)
