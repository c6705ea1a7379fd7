"""What a command holds while it waits for its portal's pace."""

from __future__ import annotations

import gc
from typing import cast

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from worker.amqp.deliveries import Delivery
from worker.flow.jobs import Job


def test_a_command_alone_holds_nothing_for_the_cycle_collector_to_walk_for_merges() -> None:
    """At 200 portals about 30,000 commands wait at once, and the collector walks
    every container each one holds: one that rides alone carries no list of its own."""
    body = b'{"entityTypeId": 2, "id": 351, "fields": {"title": "A"}}'
    properties = Basic.Properties(content_type="application/json", message_id="m1")
    raw = DeliveredMessage(
        delivery=Basic.Deliver(consumer_tag="c", delivery_tag=1, redelivered=False),
        header=ContentHeader(0, len(body), properties),
        body=body,
        channel=cast(AbstractChannel, object()),
    )
    job = Job.from_message(Delivery(raw), "update")
    assert job.decode(max_bytes=1000) is None
    assert job.parts == ()
    assert not gc.is_tracked(job.parts)
