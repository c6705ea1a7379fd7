"""`worker.client.UpdateClient` against a running worker, the broker and the sandbox."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sandbox.testing import RunningSandbox
from schemas import CommandValidationError, FailureEvent, SuccessEvent
from schemas.wire import JOB_HEADER, PORTAL_HEADER
from tests.worker.broker import connected, drain
from tests.worker.e2e import force_error, running_worker, settings_for, stored
from tests.worker.tools.helpers import declared_topology
from worker.bulk.store import SqliteJobs
from worker.client import UpdateClient
from worker.tools.broker import BrokerUnavailableError, ToolError

pytestmark = pytest.mark.rabbitmq


@pytest.mark.sandbox
async def test_each_update_gets_its_own_outcome(amqp_url: str, portal: RunningSandbox) -> None:
    settings = settings_for(amqp_url, portal)
    force_error(portal, "CRM_FIELD_ERROR_REQUIRED", item_id=4)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
        UpdateClient(amqp_url, queue=settings.UPDATE_QUEUE) as client,
    ):
        outcomes = await asyncio.gather(
            *(client.update(2, n, {"title": f"Title {n}"}, timeout_s=30) for n in (1, 2, 999, 4, 5))
        )
        dead = len(await drain(broker, settings.DEAD_LETTER_QUEUE))
        results = len(await drain(broker, settings.RESULT_QUEUE))
    by_id = {outcome.id: outcome for outcome in outcomes}
    assert [outcome.id for outcome in outcomes] == [1, 2, 999, 4, 5]
    for n in (1, 2, 5):
        success = by_id[n]
        assert isinstance(success, SuccessEvent)
        assert success.item["title"] == f"Title {n}"
        assert stored(portal, 2, n)["title"] == f"Title {n}"
    missing, refused = by_id[999], by_id[4]
    assert isinstance(missing, FailureEvent)
    assert (missing.error.error_class, missing.error.code) == ("not_found", "NOT_FOUND")
    assert isinstance(refused, FailureEvent)
    assert refused.error.code == "CRM_FIELD_ERROR_REQUIRED"
    assert refused.command == {"entityTypeId": 2, "id": 4, "fields": {"title": "Title 4"}}
    assert (dead, results) == (2, 0)  # failures are dead-lettered too; successes came back


async def test_a_bad_command_raises_and_is_never_sent(amqp_url: str) -> None:
    async with (
        declared_topology(amqp_url) as (topology, broker),
        UpdateClient(amqp_url, queue=topology.update_queue) as client,
    ):
        with pytest.raises(CommandValidationError, match=r"fields\.opened"):
            await client.update(2, 1, {"opened": 1})
        with pytest.raises(CommandValidationError):
            await client.update(2, 0, {"title": "id 0 is no item"})
        assert await drain(broker, topology.update_queue) == []


async def test_no_outcome_in_time_raises_and_leaves_the_command_queued(amqp_url: str) -> None:
    """No worker consumes: the update times out, and the command waits on the queue."""
    async with (
        declared_topology(amqp_url) as (topology, broker),
        UpdateClient(amqp_url, queue=topology.update_queue) as client,
    ):
        with pytest.raises(TimeoutError, match="may still be applied"):
            await client.update(2, 7, {"title": "later"}, timeout_s=0.5, message_id="m-late")
        [queued] = await drain(broker, topology.update_queue)
    assert queued.message_id == "m-late"
    assert (queued.reply_to or "").startswith("amq.gen-")
    assert queued.correlation_id
    assert queued.body == b'{"entityTypeId": 2, "id": 7, "fields": {"title": "later"}}'


async def test_a_missing_queue_or_broker_fails_on_entry(amqp_url: str) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        async with UpdateClient(amqp_url, queue="test.no-such-queue"):
            pass
    with pytest.raises(BrokerUnavailableError, match=r"amqp://app:\*\*\*@127\.0\.0\.1:1/"):
        async with UpdateClient("amqp://app:Secret123@127.0.0.1:1/"):
            pass


async def test_submit_job_counts_and_labels_every_command_or_sends_none(
    amqp_url: str, tmp_path: Path
) -> None:
    jobs = SqliteJobs(tmp_path / "portals.sqlite3")
    commands = [{"entityTypeId": 2, "id": n, "fields": {"title": f"T{n}"}} for n in range(1, 6)]
    async with (
        declared_topology(amqp_url) as (topology, broker),
        UpdateClient(amqp_url, queue=topology.update_queue, portal="acme") as client,
    ):
        job = await client.submit_job(commands, jobs=jobs)
        again = await client.submit_job(commands[:2], jobs=jobs, job=job)
        with pytest.raises(CommandValidationError, match=r"fields\.opened"):
            await client.submit_job(
                [*commands, {"entityTypeId": 2, "id": 9, "fields": {"opened": 1}}],
                jobs=jobs,
                job="refused",
            )
        queued = await drain(broker, topology.update_queue)
    state = await jobs.state(job)
    await jobs.close()
    assert again == job
    assert state is not None
    assert (state.queued, state.ended) == (7, 0)
    assert len(queued) == 7
    assert {m.headers[JOB_HEADER] for m in queued} == {job}
    assert {m.headers[PORTAL_HEADER] for m in queued} == {"acme"}
    assert [json.loads(m.body)["id"] for m in queued] == [1, 2, 3, 4, 5, 1, 2]
    assert await SqliteJobs(tmp_path / "portals.sqlite3").state("refused") is None
