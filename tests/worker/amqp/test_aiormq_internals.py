"""The aiormq internals the worker relies on, held against the installed aiormq and a
live broker: when a release moves them, these fail, and so does the worker's start."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import aio_pika
import aiormq
import pytest
from pamqp.commands import Basic

from worker.amqp.aiormq_internals import (
    CHANNEL_ATTRIBUTES,
    AiormqIncompatibleError,
    check_channel,
    consumer_tags,
    write_publishes,
)


@dataclass
class Message:
    body: bytes
    routing_key: str
    properties: Basic.Properties
    mandatory: bool
    exchange: str = ""


def test_a_channel_without_the_bookkeeping_stops_the_worker_with_a_clear_reason() -> None:
    class Moved:
        """An aiormq channel of a release that renamed its confirmations."""

        def __init__(self) -> None:
            for name in CHANNEL_ATTRIBUTES:
                if name != "confirmations":
                    setattr(self, name, None)

    with pytest.raises(AiormqIncompatibleError) as raised:
        check_channel(Moved())  # type: ignore[arg-type]
    assert f"aiormq {version('aiormq')} lacks confirmations" in str(raised.value)


@pytest.mark.rabbitmq
async def test_the_installed_aiormq_has_what_the_worker_uses(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        check_channel(await channel.get_underlay_channel())
    finally:
        await connection.close()


@pytest.mark.rabbitmq
async def test_publishes_written_together_are_each_confirmed_or_returned(amqp_url: str) -> None:
    queue = f"test.internals.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        declared = await channel.declare_queue(queue, auto_delete=True)
        raw: Any = await channel.get_underlay_channel()
        big = b"x" * (raw.max_content_size * 2 + 5)  # three body frames
        tags_before = raw.delivery_tag
        confirmations = await write_publishes(
            raw,
            [
                Message(b"one", queue, Basic.Properties(message_id="a"), True),
                Message(b"two", f"{queue}.nowhere", Basic.Properties(message_id="b"), True),
                Message(big, queue, Basic.Properties(message_id="c"), False),
            ],
        )
        results = await asyncio.gather(*confirmations, return_exceptions=True)
        assert isinstance(results[0], Basic.Ack)
        assert isinstance(results[1], aiormq.exceptions.PublishError)  # returned: no queue
        assert isinstance(results[2], Basic.Ack)
        assert raw.delivery_tag == tags_before + 3
        assert raw.message_id_delivery_tag == {}  # forgotten once confirmed
        got = []
        async with declared.iterator() as messages:
            async for message in messages:
                got.append(message.body)
                await message.ack()
                if len(got) == 2:
                    break
        assert got == [b"one", big]
    finally:
        await connection.close()


@pytest.mark.rabbitmq
async def test_a_consumer_the_server_cancels_leaves_the_channels_consumers(amqp_url: str) -> None:
    queue = f"test.internals.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue)
        raw: Any = await channel.get_underlay_channel()

        async def ignore(message: Any) -> None:
            pass

        ok = await raw.basic_consume(queue, ignore)
        assert consumer_tags(raw) == {ok.consumer_tag}
        other = await connection.channel()
        await other.queue_delete(queue)  # the server cancels the consumer
        for _ in range(100):
            if not consumer_tags(raw):
                break
            await asyncio.sleep(0.02)
        assert consumer_tags(raw) == set()
    finally:
        await connection.close()
