"""Every backend stores one value per key and applies a change atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.worker.limiter.conftest import BackendFactory
from worker.limiter import Codec

COUNTER: Codec[int] = Codec("counter", lambda n: str(n).encode(), int)


def add(amount: int) -> Callable[[int | None], tuple[int, int]]:
    def change(value: int | None) -> tuple[int, int]:
        new = (value or 0) + amount
        return new, new

    return change


async def test_a_change_sees_the_stored_value_and_returns_its_result(
    make_backend: BackendFactory,
) -> None:
    backend = make_backend(COUNTER)
    assert await backend.modify("a", add(2)) == 2
    assert await backend.modify("a", add(3)) == 5
    assert await backend.modify("b", add(1)) == 1


async def test_concurrent_changes_are_not_lost(make_backend: BackendFactory) -> None:
    backend = make_backend(COUNTER)
    await asyncio.gather(*(backend.modify("n", add(1)) for _ in range(100)))
    assert await backend.modify("n", add(0)) == 100
