"""One worker process pacing against a shared bucket: prints the unix time of every token it gets.

python -m tests.worker.limiter.pacing_process REDIS_URL SCOPE START_AT UNTIL
"""

from __future__ import annotations

import asyncio
import sys
import time

from redis.asyncio import Redis

from worker.limiter import RequestPacer, SystemClock, shared_backends

BURST = 5
RATE_PER_S = 10.0


async def take_tokens(redis: Redis, *, scope: str, until: float) -> list[float]:
    """Take tokens one after another until ``until``; the unix time each was granted."""
    pacer = RequestPacer(
        burst=BURST,
        rate_per_s=RATE_PER_S,
        clock=SystemClock(),
        backend=shared_backends(redis, scope=scope).pacer,
    )
    granted: list[float] = []
    while time.time() < until:
        await pacer.acquire()
        granted.append(time.time())
    return granted


async def main(url: str, scope: str, start_at: float, until: float) -> None:
    redis = Redis.from_url(url)
    try:
        await asyncio.sleep(start_at - time.time())
        for at in await take_tokens(redis, scope=scope, until=until):
            print(repr(at))
    finally:
        await redis.aclose()


if __name__ == "__main__":
    url, scope, start_at, until = sys.argv[1:]
    asyncio.run(main(url, scope, float(start_at), float(until)))
