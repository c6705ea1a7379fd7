"""A delivery keeps what the worker reads of the broker's message, not the message."""

from __future__ import annotations

import gc
import weakref
from typing import Any, cast

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from worker.amqp.deliveries import Delivery


def test_a_delivery_lets_the_broker_message_go_and_keeps_what_is_read_of_it() -> None:
    """Deliveries wait in a portal's prefetch for seconds, 30,000 of them at 200 portals:
    the message, method frame and content header they came in are not kept with them."""
    channel = cast(AbstractChannel, object())
    body = b'{"entityTypeId": 2, "id": 351, "fields": {"title": "A"}}'
    properties = Basic.Properties(
        content_type="application/json", message_id="m1", headers={"x-b24-portal": "north"}
    )
    raw = DeliveredMessage(
        delivery=Basic.Deliver(consumer_tag="c", delivery_tag=7, redelivered=True),
        header=ContentHeader(0, len(body), properties),
        body=body,
        channel=channel,
    )
    left: list[Any] = [weakref.ref(raw), weakref.ref(raw.header)]
    was_enabled = gc.isenabled()
    gc.disable()  # only reference counting may free them: nothing kept them alive
    try:
        delivery = Delivery(raw)
        del raw
        assert [ref() for ref in left] == [None, None]
    finally:
        if was_enabled:
            gc.enable()
    assert (delivery.channel, delivery.delivery_tag, delivery.redelivered) == (channel, 7, True)
    assert delivery.body == body
    assert (delivery.message_id, delivery.content_type) == ("m1", "application/json")
    assert delivery.header("x-b24-portal") == "north"
