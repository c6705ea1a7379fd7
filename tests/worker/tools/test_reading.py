"""A read of DEAD_LETTER_QUEUE ends once the letters it handed back are ready again.

RabbitMQ puts a closed channel's deliveries back after confirming the close:
on a loaded machine a read begun right after another found the queue empty
(`worker.tools.letters`). A stand-in broker shows the queue short of the
letters handed back for a few looks after the close, as RabbitMQ did.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from worker.tools import letters as letters_module
from worker.tools.letters import reading


class _Message:
    def __init__(self, number: int) -> None:
        self.body = b"{}"
        self.number = number
        self.processed = False

    async def ack(self) -> None:
        self.processed = True


class _Queue:
    """One queue of the stand-in broker: its ready letters, and how many looks after a
    close it still counts the letters handed back as taken."""

    def __init__(self, letters: int, *, back_after_looks: int) -> None:
        self.ready = [_Message(n) for n in range(letters)]
        self.out: list[_Message] = []
        self.back_after_looks = back_after_looks
        self.looks_since_close: int | None = None
        self.handed_back = False
        self.looks_after_back = 0  # looks once the handed-back letters were ready again

    def count(self) -> int:
        if self.looks_since_close is None and self.handed_back:
            self.looks_after_back += 1
        if self.looks_since_close is not None:
            self.looks_since_close += 1
            if self.looks_since_close > self.back_after_looks:
                self.ready[:0] = [m for m in self.out if not m.processed]
                self.out = []
                self.looks_since_close = None
                self.handed_back = True
        return len(self.ready)


class _Channel:
    def __init__(self, queue: _Queue) -> None:
        self._queue = queue
        self.is_closed = False
        self._consuming = False

    async def declare_queue(self, name: str, *, passive: bool) -> Any:
        queue = self._queue

        async def consume(callback: Callable[[_Message], Any], *, no_ack: bool) -> None:
            self._consuming = True
            taken, queue.ready = queue.ready, []
            queue.out.extend(taken)
            for message in taken:
                await callback(message)

        return SimpleNamespace(
            declaration_result=SimpleNamespace(message_count=queue.count()), consume=consume
        )

    async def set_qos(self, *, prefetch_count: int) -> None:
        pass

    async def close(self) -> None:
        self.is_closed = True
        if self._consuming:
            self._queue.looks_since_close = 0


class _Connection:
    def __init__(self, queue: _Queue) -> None:
        self._queue = queue

    async def channel(self) -> _Channel:
        return _Channel(self._queue)


def _connected(queue: _Queue) -> Any:
    """A connection to the stand-in broker, where `reading` takes an aio-pika one."""
    return _Connection(queue)


async def _read_without_removing(connection: Any) -> int:
    async with reading(connection, "dead") as read:
        return len([letter async for letter in read.letters])


async def test_a_read_ends_once_the_letters_it_handed_back_are_ready_again() -> None:
    queue = _Queue(3, back_after_looks=4)
    connection = _connected(queue)
    assert await _read_without_removing(connection) == 3
    assert queue.count() == 3  # a read begun now finds them all
    assert await _read_without_removing(connection) == 3


async def test_letters_removed_are_not_waited_for() -> None:
    queue = _Queue(3, back_after_looks=2)
    async with reading(_connected(queue), "dead") as read:
        async for letter in read.letters:
            if letter.position != 2:
                await letter.message.ack()
    assert [m.number for m in queue.ready] == [1]
    # It stopped looking at the look that saw the one letter it handed back.
    assert queue.looks_after_back == 0


async def test_a_read_waits_a_bounded_time_for_letters_another_reader_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(letters_module, "HANDED_BACK_WITHIN_S", 0.2)
    queue = _Queue(3, back_after_looks=10**9)  # they never come back to this reader
    assert await _read_without_removing(_connected(queue)) == 3
    assert queue.count() == 0
