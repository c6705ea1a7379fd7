"""Pacers sharing one portal's bucket through Redis never hand out more than the portal drains.

These run on the real clock: each pacer has its own connection (and in one
test its own process), and the grants of all of them together are checked
against the bucket's bound, ``burst + rate * elapsed`` at every grant.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.worker.limiter.pacing_process import BURST, RATE_PER_S, take_tokens

pytestmark = pytest.mark.redis

PACERS = 3
RUN_S = 2.0


def assert_within_the_bucket(granted: list[float], started: float, until: float) -> None:
    granted = sorted(granted)
    for count, at in enumerate(granted, start=1):
        assert count <= BURST + RATE_PER_S * (at - started), f"grant {count} came too early"
    # the pacers together still use most of what the bucket allows
    assert len(granted) >= 0.8 * (BURST + RATE_PER_S * (until - started))


async def test_pacers_with_their_own_connections_share_one_bucket(
    redis_url: str, scope: str
) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(PACERS)]
    started = time.time()
    until = started + RUN_S
    try:
        runs = await asyncio.gather(*(take_tokens(c, scope=scope, until=until) for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    assert all(runs), "every pacer got tokens"
    assert_within_the_bucket([at for run in runs for at in run], started, until)


async def test_pacers_in_separate_processes_share_one_bucket(redis_url: str, scope: str) -> None:
    start_at = time.time() + 1.5  # time for each process to start and import
    until = start_at + RUN_S
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.worker.limiter.pacing_process",
            redis_url,
            scope,
            repr(start_at),
            repr(until),
            cwd=Path(__file__).parents[3],
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(PACERS)
    ]
    outputs = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0] * PACERS
    runs = [[float(line) for line in out.split()] for out, _ in outputs]
    assert all(runs), "every process got tokens"
    assert_within_the_bucket([at for run in runs for at in run], start_at, until)
