"""Coalesced acks: never an ack for a delivery not settled, never an unknown tag, nothing left."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.amqp.acks import Acks


class Broker:
    """One channel as the broker sees it: unacked tags, and the rules for ack frames."""

    def __init__(self, tags: int) -> None:
        self.unacked = set(range(1, tags + 1))
        self.settled: set[int] = set()
        self.frames: list[tuple[int, bool]] = []
        self.is_closed = False
        self.errors: list[str] = []

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        await asyncio.sleep(0)  # a frame write yields, as the real one does
        self.frames.append((tag, multiple))
        covered = {t for t in self.unacked if t <= tag} if multiple else {tag}
        if tag not in self.unacked:
            self.errors.append(f"unknown delivery tag {tag}")
        elif not covered <= self.settled:
            self.errors.append(f"acked deliveries not yet settled: {covered - self.settled}")
        if self.errors:  # the broker closes the channel
            self.is_closed = True
            raise ConnectionError(self.errors[-1])
        self.unacked -= covered


async def test_a_run_of_settled_deliveries_is_one_frame() -> None:
    broker = Broker(50)
    acks = Acks(delay_s=0.001)
    for tag in range(1, 51):
        broker.settled.add(tag)
        acks.ack(broker, tag, f"m{tag}")  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames == [(50, True)]
    assert not broker.unacked


async def test_settled_behind_a_held_delivery_are_acked_alone_and_the_run_resumes() -> None:
    broker = Broker(5)
    acks = Acks(delay_s=0.001)
    for tag in (1, 3, 4):  # 2 is held (its item waits behind a retry)
        broker.settled.add(tag)
        acks.ack(broker, tag, f"m{tag}")  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames == [(1, True), (3, False), (4, False)]
    for tag in (2, 5):
        broker.settled.add(tag)
        acks.ack(broker, tag, f"m{tag}")  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames[3:] == [(5, True)]
    assert not broker.unacked


async def test_a_nacked_delivery_lets_the_run_pass_without_an_ack() -> None:
    broker = Broker(3)
    acks = Acks(delay_s=0.001)
    broker.unacked.discard(2)  # nacked: the broker forgot it
    acks.settled_elsewhere(broker, 2)  # type: ignore[arg-type]
    for tag in (1, 3):
        broker.settled.add(tag)
        acks.ack(broker, tag, f"m{tag}")  # type: ignore[arg-type]
    await acks.flush()
    assert broker.frames == [(3, True)]
    assert not broker.unacked


async def test_a_closed_channel_is_forgotten() -> None:
    broker = Broker(2)
    acks = Acks(delay_s=0.001)
    broker.settled.add(1)
    acks.ack(broker, 1, "m1")  # type: ignore[arg-type]
    broker.is_closed = True
    await acks.flush()
    assert broker.frames == []
    assert acks.pending == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=120), st.randoms(use_true_random=False))
def test_any_settling_order_acks_every_delivery_once_and_only_when_settled(
    count: int, rnd: random.Random
) -> None:
    async def scenario() -> None:
        broker = Broker(count)
        acks = Acks(delay_s=0)
        order = list(range(1, count + 1))
        rnd.shuffle(order)
        for tag in order:
            broker.settled.add(tag)
            if rnd.random() < 0.1:
                broker.unacked.discard(tag)  # nacked
                acks.settled_elsewhere(broker, tag)  # type: ignore[arg-type]
            else:
                acks.ack(broker, tag, f"m{tag}")  # type: ignore[arg-type]
            if rnd.random() < 0.3:
                await asyncio.sleep(0)  # let some flushes and writes happen in between
        await acks.flush()
        assert broker.errors == []
        assert not broker.unacked
        assert acks.pending == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("held", [1, 25, 50])
async def test_frames_stay_in_order_while_an_earlier_write_is_pending(held: int) -> None:
    broker = Broker(50)
    acks = Acks(delay_s=0)
    for tag in range(1, 51):
        if tag != held:
            broker.settled.add(tag)
            acks.ack(broker, tag, f"m{tag}")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    broker.settled.add(held)
    acks.ack(broker, held, f"m{held}")  # type: ignore[arg-type]
    await acks.flush()
    assert not broker.unacked
    assert broker.errors == []
