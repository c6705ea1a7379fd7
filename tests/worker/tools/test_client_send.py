"""`UpdateClient.send` and `send_many`, and `SyncUpdateClient`, against RabbitMQ:
confirmed publishes whose ids come back at once, and outcomes left to the queues."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import pytest

from sandbox.testing import RunningSandbox
from schemas import CommandValidationError, SuccessEvent
from schemas.wire import PORTAL_HEADER
from tests.worker.broker import connected, drain, take
from tests.worker.e2e import events, running_worker, settings_for, stored
from tests.worker.tools.helpers import declared_topology
from worker.client import SyncUpdateClient, UpdateClient
from worker.tools.broker import BrokerUnavailableError

pytestmark = pytest.mark.rabbitmq


def deal(n: int) -> dict[str, object]:
    return {"entityTypeId": 2, "id": n, "fields": {"title": f"Deal {n}"}}


async def test_send_many_returns_the_ids_once_confirmed_in_order(amqp_url: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    async with (
        declared_topology(amqp_url) as (topology, broker),
        UpdateClient(amqp_url, queue=topology.update_queue, portal="acme") as client,
    ):
        ids = await client.send_many([deal(n) for n in range(1, 6)], message_ids=["a", None])
        one = await client.send(2, 9, {"title": "Deal 9"}, reply_to="svc.replies")
        # Confirmed: on the queue when the call returns, no worker running.
        queued = await drain(broker, topology.update_queue)
    assert ids[0] == "a"
    assert len(set(ids)) == 5
    assert [m.message_id for m in queued] == [*ids, one]
    assert [json.loads(m.body) for m in queued[:5]] == [deal(n) for n in range(1, 6)]
    assert all((m.headers or {}).get(PORTAL_HEADER) == "acme" for m in queued)
    assert queued[-1].reply_to == "svc.replies"
    assert all(m.reply_to is None for m in queued[:5])
    for message in queued:  # each with the time of its publish
        assert message.timestamp is not None
        assert before <= message.timestamp.astimezone(UTC) <= datetime.now(UTC)


async def test_send_many_with_one_bad_command_sends_none(amqp_url: str) -> None:
    async with (
        declared_topology(amqp_url) as (topology, broker),
        UpdateClient(amqp_url, queue=topology.update_queue) as client,
    ):
        bad = {"entityTypeId": 2, "id": 3, "fields": {"opened": 1}}
        with pytest.raises(CommandValidationError) as raised:
            await client.send_many([deal(1), deal(2), bad, deal(4)])
        assert await drain(broker, topology.update_queue) == []
    assert "command 2 of the batch: nothing was sent" in raised.value.__notes__


@pytest.mark.sandbox
async def test_sent_commands_are_applied_and_their_outcomes_go_to_the_queues(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
        UpdateClient(amqp_url, queue=settings.UPDATE_QUEUE) as client,
    ):
        ids = await client.send_many([deal(n) for n in (1, 2, 3)])
        ended = events(await take(broker, settings.RESULT_QUEUE, 3))
    assert sorted(e["messageId"] for e in ended) == sorted(ids)
    assert [stored(portal, 2, n)["title"] for n in (1, 2, 3)] == ["Deal 1", "Deal 2", "Deal 3"]


@pytest.mark.sandbox
async def test_the_sync_client_works_from_plain_threads(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    outcomes: list[object] = []
    sent: list[str] = []

    def service() -> None:
        with SyncUpdateClient(amqp_url, queue=settings.UPDATE_QUEUE) as client:
            outcomes.append(client.update(2, 4, {"title": "sync update"}, timeout_s=30))
            sent.extend(client.send_many([deal(5)]))
            sent.append(client.send(2, 1, {"title": "sync send"}))

    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        thread = threading.Thread(target=service)
        thread.start()
        await asyncio.to_thread(thread.join, 60)
        assert not thread.is_alive()
        ended = events(await take(broker, settings.RESULT_QUEUE, 2))
    [outcome] = outcomes
    assert isinstance(outcome, SuccessEvent)
    assert outcome.item["title"] == "sync update"
    assert sorted(e["messageId"] for e in ended) == sorted(sent)
    assert stored(portal, 2, 5)["title"] == "Deal 5"
    assert stored(portal, 2, 1)["title"] == "sync send"


def test_the_sync_client_outside_with_says_so() -> None:
    client = SyncUpdateClient("amqp://guest:guest@127.0.0.1:5672/")
    with pytest.raises(RuntimeError, match="inside `with`"):
        client.send(2, 1, {"title": "x"})


def test_the_sync_client_stops_its_thread_when_the_broker_is_missing() -> None:
    before = threading.active_count()
    with pytest.raises(BrokerUnavailableError), SyncUpdateClient("amqp://guest:guest@127.0.0.1:1/"):
        pass
    assert threading.active_count() == before
