"""The periodic reading of the queues' backlog: a reading made by someone else
meanwhile stands for the next turn, and the turns come back once it stops."""

from __future__ import annotations

import asyncio
import time

from worker.amqp.backlog import read_every


async def test_a_fresher_reading_made_elsewhere_skips_the_turns_until_it_stops() -> None:
    read_at = time.monotonic()
    turns = 0

    async def read() -> None:
        nonlocal read_at, turns
        turns += 1
        read_at = time.monotonic()

    async def read_elsewhere(for_s: float) -> None:
        nonlocal read_at
        until = time.monotonic() + for_s
        while time.monotonic() < until:
            read_at = time.monotonic()
            await asyncio.sleep(0.05)

    reading = asyncio.create_task(read_every(read, lambda: read_at, 1.0))
    try:
        await read_elsewhere(3.5)  # without the skip: the first turn and three more
        assert turns == 1
        await asyncio.sleep(2.5)  # a turn a second again, the first 1 s after the last reading
        assert turns >= 2
    finally:
        reading.cancel()
