"""A portal named by its key or by its member_id is one portal: one queue, one lane,
one order per item, and events name its key."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import pytest

from sandbox.testing import RunningSandbox
from schemas.wire import PORTAL_HEADER
from tests.worker.broker import connected, take
from tests.worker.e2e import events, running_worker, settings_for, stored

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

MEMBER_ID = "5e4f0a9b8c7d6e5f4a3b2c1d0e9f8a7b"


async def send(connection: Any, exchange: str, portal: str, body: dict[str, Any]) -> None:
    channel = await connection.channel()
    target = await channel.get_exchange(exchange)
    await target.publish(
        aio_pika.Message(
            json.dumps(body).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={PORTAL_HEADER: portal},
        ),
        routing_key="",
    )
    await channel.close()


async def test_the_key_and_the_member_id_reach_one_queue_in_order(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    settings = settings_for(
        amqp_url,
        north,
        B24_PORTAL_KEY="north",
        B24_DEFAULT_PORTAL="north",
        B24_PORTALS={"south": {"webhook_url": south.webhook_url, "member_id": MEMBER_ID}},
    )
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        exchange = settings.UPDATE_QUEUE
        # Published while the worker is held back: they wait in the queue they reached.
        await worker.consumers.hold("south")
        for n, name in enumerate(["south", MEMBER_ID, "south", MEMBER_ID], start=1):
            await send(
                broker, exchange, name, {"entityTypeId": 2, "id": 4, "fields": {"title": f"t{n}"}}
            )
        channel = await broker.channel()
        in_queue = await channel.declare_queue(worker.topology.portal_queue("south"), passive=True)
        waiting = in_queue.declaration_result.message_count
        await channel.close()
        await worker.consumers.release("south")
        done = events(await take(broker, settings.RESULT_QUEUE, 4, timeout_s=20))
    assert waiting == 4  # all four in the portal's queue, none in UPDATE_QUEUE
    assert [event["portal"] for event in done] == ["south"] * 4
    assert stored(south, 2, 4)["title"] == "t4"  # applied in the order they were sent
    assert stored(north, 2, 4)["title"] != "t4"
