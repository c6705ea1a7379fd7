"""The registry outlives a restart of Redis when Redis keeps an append-only file, and
a worker started afterwards serves what it holds.

The machine's own Redis runs without AOF, so this test starts one of its own
(`redis-server --appendonly yes`) on a free port, in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr
from redis.asyncio import Redis

from tests.reliability.processes import free_port
from worker.registry import RedisStore, Registry, Sealer, new_key, with_registry
from worker.settings import PortalConfig, Settings


@contextmanager
def redis_with_aof(directory: Path, port: int) -> Iterator[str]:
    """A redis-server keeping an append-only file in ``directory``; stopped by its PID."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while asyncio.run(_pong(url)) is False:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        os.kill(process.pid, signal.SIGTERM)  # a clean shutdown, as a restart does
        process.wait(timeout=20)


async def _pong(url: str) -> bool:
    client = Redis.from_url(url)
    try:
        return bool(await client.ping())
    except Exception:  # not answering yet
        return False
    finally:
        await client.aclose()


def registry_at(url: str, key: str) -> Registry:
    return Registry(RedisStore(Redis.from_url(url), prefix="b24-worker:registry:q:"), Sealer(key))


def test_the_registry_survives_a_restart_of_redis_with_aof(tmp_path: Path) -> None:
    key, port = new_key(), free_port()
    acme = PortalConfig(webhook_url=SecretStr("https://acme.example.com/rest/1/c0de01/"))
    beta = PortalConfig(
        portal_url="https://beta.example.com",
        client_id="app.1",
        client_secret=SecretStr("s3cret-beta"),
        refresh_token=SecretStr("r3fresh-beta"),
        rate_burst=10,
    )

    async def fill(url: str) -> None:
        registry = registry_at(url, key)
        await registry.add("acme", acme)
        await registry.add("beta", beta)
        await registry.close()

    async def read(url: str) -> dict[str, PortalConfig]:
        registry = registry_at(url, key)
        try:
            return await registry.portals()
        finally:
            await registry.close()

    with redis_with_aof(tmp_path, port) as url:
        asyncio.run(fill(url))
    assert list(tmp_path.glob("appendonly*")), "Redis wrote no append-only file"
    with redis_with_aof(tmp_path, port) as url:
        assert asyncio.run(read(url)) == {"acme": acme, "beta": beta}
        settings = Settings(LIMITER_URL=url, UPDATE_QUEUE="q", REGISTRY_KEY=key)
        started = asyncio.run(with_registry(settings))  # what a worker's start reads
        assert sorted(started.portals()) == ["acme", "beta"]
        assert started.portals()["beta"].rate_burst == 10
