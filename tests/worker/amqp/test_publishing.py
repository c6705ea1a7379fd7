"""The publisher against a queue that refuses: a nack replaces the channel (at most
once per _RENEW_AFTER_S), and the nacked one is closed first, so the new one takes
its number (aiormq numbers a channel one past the highest open; the broker refuses
numbers past its channel_max). tests/cluster/test_publishing.py has the refusal this
is for: a leader lost as the channel began."""

from __future__ import annotations

import asyncio
import time
import uuid
from functools import partial

import pytest

from worker.amqp import publishing
from worker.amqp.nodes import connect_nodes, underlay
from worker.amqp.publishing import Publisher, RefusedError, event_properties

pytestmark = pytest.mark.rabbitmq


async def _publish(publisher: Publisher, queue: str) -> None:
    properties = event_properties(uuid.uuid4().hex, None)
    await publisher.publish(b"{}", routing_key=queue, properties=properties, mandatory=True)


async def test_a_nacked_channel_is_replaced_under_its_own_number(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publishing, "_RENEW_AFTER_S", 0.2)
    queue = f"publishing-{uuid.uuid4().hex}"
    connection = await connect_nodes(amqp_url)
    try:
        channel = await connection.channel()
        # Full at one message: a quorum queue then refuses (nacks) what does not fit.
        arguments = {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"}
        declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
        publisher = Publisher(partial(underlay, connection))
        await publisher.open()
        channels = (await underlay(connection)).channels
        numbers = set(channels)
        for _ in range(20):
            try:
                await _publish(publisher, queue)
            except RefusedError:
                break
        else:
            pytest.fail("the full queue took 20 messages")
        seen = [channels[max(numbers)]]  # held, so none is collected and its id reused
        for _ in range(5):
            await asyncio.sleep(0.25)
            with pytest.raises(RefusedError):
                await _publish(publisher, queue)
            assert set(channels) == numbers
            seen.append(channels[max(numbers)])
        # Once the queue has room again, publishing goes on.
        await declared.purge()
        deadline = time.monotonic() + 5
        while True:
            try:
                await _publish(publisher, queue)
                break
            except RefusedError:
                assert time.monotonic() < deadline, "still refused after the purge"
                await asyncio.sleep(0.25)
        await publisher.close()
        # (a quorum queue's message count in declare-ok may lag: take the message)
        taken = await declared.get(fail=False, no_ack=True)
        await declared.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    # A channel is replaced after a nack once it is 0.2 s old (here): on a fresh one
    # the first nack comes sooner, the next one replaces it.
    assert len({id(c) for c in seen}) >= 3
    assert all(c is not None and c.is_closed for c in seen)
    assert taken is not None
