"""The worker end to end: the real broker, a real sandbox portal, real HTTP.

Each outcome class and each portal-wide state is produced here, and where its
event went (or that none was made and the message stayed queued) is checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, drain, publish, take
from tests.worker.e2e import (
    control,
    events,
    eventually,
    force_error,
    running_worker,
    settings_for,
    stored,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as running:
        yield running


def deal(item_id: int, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": fields}


async def test_a_command_is_applied_and_its_success_reported(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(
            broker,
            settings.UPDATE_QUEUE,
            deal(1, title="Applied", observers=[1, 2], opened=True, Title="ignored"),
            message_id="m-1",
            correlation_id="c-1",
        )
        [event] = events(await take(broker, settings.RESULT_QUEUE, 1))
    assert event["status"] == "succeeded"
    assert (event["messageId"], event["correlationId"], event["attempts"]) == ("m-1", "c-1", 1)
    assert (event["entityTypeId"], event["id"]) == (2, 1)
    assert event["item"]["title"] == "Applied"
    assert event["ignoredFields"] == ["Title"]
    assert event["notApplied"] == []
    item = stored(portal, 2, 1)
    assert (item["title"], item["observers"], item["opened"]) == ("Applied", [1, 2], "Y")


async def test_an_invalid_command_is_dead_lettered_with_its_reason_and_original(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, deal(1, opened=1), headers={"trace": "t1"})
        await publish(broker, settings.UPDATE_QUEUE, b"not json", content_type="text/plain")
        dead = events(await take(broker, settings.DEAD_LETTER_QUEUE, 2))
    by_body = {json_or_text(e["command"]): e for e in dead}
    bad_boolean = by_body["opened"]
    assert bad_boolean["error"]["class"] == "validation"
    assert bad_boolean["error"]["description"].startswith('fields.opened: expected "Y" or "N"')
    assert bad_boolean["command"] == deal(1, opened=1)
    assert bad_boolean["properties"]["headers"] == {"trace": "t1"}
    assert bad_boolean["messageId"]  # assigned, since the producer gave none
    assert bad_boolean["attempts"] == 0
    not_json = by_body["text"]
    assert not_json["command"] == "not json"
    assert not_json["error"]["class"] == "validation"
    assert stored(portal, 2, 1)["opened"] == "Y"  # nothing reached the portal


def json_or_text(command: Any) -> str:
    return "text" if isinstance(command, str) else next(iter(command["fields"]))


@pytest.mark.parametrize(
    ("fault", "command", "error_class", "code"),
    [
        ({}, deal(999), "not_found", "NOT_FOUND"),
        ({"denied_entity_types": [2]}, deal(1, title="x"), "access_denied", "ACCESS_DENIED"),
        (
            {"dynamic_items_restricted": True},
            {"entityTypeId": 1032, "id": 1, "fields": {"title": "x"}},
            "plan_restricted",
            "UPDATE_DYNAMIC_ITEM_RESTRICTED",
        ),
        (
            {
                "item_errors": [
                    {"error": "CRM_FIELD_ERROR_REQUIRED", "entity_type_id": 2, "item_id": 1}
                ]
            },
            deal(1, title="x"),
            "validation",
            "CRM_FIELD_ERROR_REQUIRED",
        ),
    ],
)
async def test_per_message_failures_are_classified(
    amqp_url: str,
    portal: RunningSandbox,
    fault: dict[str, Any],
    command: dict[str, Any],
    error_class: str,
    code: str,
) -> None:
    control(portal, "PATCH", "faults", fault)
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, command, message_id="m-f")
        [event] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1))
        assert await drain(broker, settings.RESULT_QUEUE) == []
    assert (event["error"]["class"], event["error"]["code"]) == (error_class, code)
    assert event["error"]["retryable"] is False


async def test_a_transient_failure_is_retried_through_a_tier_and_then_succeeds(
    amqp_url: str, portal: RunningSandbox
) -> None:
    force_error(portal, "INTERNAL_SERVER_ERROR", item_id=2, times=1)
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, deal(2, title="Second try"), message_id="m-t")
        [event] = events(await take(broker, settings.RESULT_QUEUE, 1))
    assert (event["messageId"], event["attempts"]) == ("m-t", 2)
    assert stored(portal, 2, 2)["title"] == "Second try"


async def test_transient_failures_end_as_transient_after_max_attempts(
    amqp_url: str, portal: RunningSandbox
) -> None:
    force_error(portal, "INTERNAL_SERVER_ERROR", item_id=3)
    settings = settings_for(amqp_url, portal, MAX_ATTEMPTS=2)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, deal(3, title="never"), message_id="m-x")
        [event] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1))
    assert (event["error"]["class"], event["attempts"]) == ("transient", 2)
    assert event["error"]["retryable"] is True


async def test_a_later_command_for_an_item_waits_for_the_earlier_ones_retry(
    amqp_url: str, portal: RunningSandbox
) -> None:
    force_error(portal, "INTERNAL_SERVER_ERROR", item_id=4, times=1)
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, deal(4, title="first"), message_id="first")
        await publish(broker, settings.UPDATE_QUEUE, deal(4, title="second"), message_id="second")
        done = events(await take(broker, settings.RESULT_QUEUE, 2))
    assert [e["messageId"] for e in done] == ["first", "second"]
    assert [e["attempts"] for e in done] == [2, 1]
    assert stored(portal, 2, 4)["title"] == "second"


async def test_reply_to_gets_the_success_and_an_unroutable_one_falls_back(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        channel = await broker.channel()
        replies = await channel.declare_queue(exclusive=True)
        await publish(
            broker,
            settings.UPDATE_QUEUE,
            deal(1, title="r"),
            message_id="m-r",
            reply_to=replies.name,
        )
        [reply] = events(await take(broker, replies.name, 1))
        assert reply["messageId"] == "m-r"
        await publish(
            broker,
            settings.UPDATE_QUEUE,
            deal(2, title="r"),
            message_id="m-gone",
            reply_to="no.such.queue",
        )
        [fallback] = events(await take(broker, settings.RESULT_QUEUE, 1))
        assert fallback["messageId"] == "m-gone"


@pytest.mark.parametrize(
    ("fault", "state"),
    [({"overload": True}, "blocked"), ({"no_auth": True}, "bad_credentials")],
)
async def test_a_portal_wide_state_holds_the_commands_then_recovers(
    amqp_url: str, portal: RunningSandbox, fault: dict[str, Any], state: str
) -> None:
    control(portal, "PATCH", "faults", fault)
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        for item_id in (1, 2, 3):
            await publish(broker, settings.UPDATE_QUEUE, deal(item_id, title="later"))
        await eventually(lambda: worker.pipeline.down == state)
        assert worker.not_ready() is None  # about the worker, not its portal
        # Held by the worker, in order, not failed and not sent: no event of any kind.
        await eventually(lambda: worker.pipeline.held == 3)
        assert await drain(broker, settings.DEAD_LETTER_QUEUE) == []
        assert await drain(broker, settings.RESULT_QUEUE) == []
        control(portal, "PATCH", "faults", {key: False for key in fault})
        done = events(await take(broker, settings.RESULT_QUEUE, 3, timeout_s=30))
        dead = await drain(broker, settings.DEAD_LETTER_QUEUE)
    assert sorted(e["id"] for e in done) == [1, 2, 3]
    assert all(e["status"] == "succeeded" and e["attempts"] == 1 for e in done)
    assert dead == []


async def test_a_consumer_cancelled_by_the_server_consumes_again_once(
    amqp_url: str, portal: RunningSandbox
) -> None:
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        first_tag, channel = worker.consumers.registrations[settings.UPDATE_QUEUE]
        await channel.basic_cancel(first_tag)  # as the broker's basic.cancel would leave it
        await eventually(
            lambda: worker.consumers.registrations[settings.UPDATE_QUEUE][0] != first_tag, 10
        )
        assert len(channel.consumers) == 1  # type: ignore[attr-defined]  # exactly once
        await publish(broker, settings.UPDATE_QUEUE, deal(1, title="again"), message_id="m-a")
        [event] = events(await take(broker, settings.RESULT_QUEUE, 1))
    assert event["messageId"] == "m-a"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"ufCrm_1721244707203": 1}, 'fields.ufCrm_1721244707203: expected "Y" or "N"'),
        ({"ufCrm_1721244707202": "one tag"}, "fields.ufCrm_1721244707202: expected an array"),
        ({"ufCrm_999": "x"}, "fields.ufCrm_999: the portal has no such custom field"),
    ],
)
async def test_custom_fields_are_checked_against_the_portals_definitions(
    amqp_url: str, portal: RunningSandbox, fields: dict[str, Any], reason: str
) -> None:
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, deal(1, **fields), message_id="m-uf")
        await publish(
            broker,
            settings.UPDATE_QUEUE,
            deal(2, ufCrm_1721244707203=True, ufCrm_1721244707202=["a", "b"]),
            message_id="m-ok",
        )
        [failure] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1))
        [success] = events(await take(broker, settings.RESULT_QUEUE, 1))
    assert failure["error"]["class"] == "validation"
    assert failure["error"]["description"].startswith(reason)
    assert success["messageId"] == "m-ok"
    item = stored(portal, 2, 2)
    assert (item["ufCrm_1721244707203"], item["ufCrm_1721244707202"]) == ("Y", ["a", "b"])


async def test_an_error_code_the_worker_does_not_know_ends_as_unknown_with_the_code(
    amqp_url: str, portal: RunningSandbox
) -> None:
    force_error(portal, "ERROR_METHOD_NOT_FOUND", item_id=1)
    settings = settings_for(amqp_url, portal)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, deal(1, title="x"), message_id="m-u")
        [event] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1))
    assert (event["error"]["class"], event["error"]["code"]) == (
        "unknown",
        "ERROR_METHOD_NOT_FOUND",
    )


async def test_a_call_without_an_answer_is_in_doubt_only_for_commands_that_are_not_idempotent(
    amqp_url: str, portal: RunningSandbox
) -> None:
    control(portal, "PATCH", "faults", {"latency_ms": 1500})
    settings = settings_for(amqp_url, portal, B24_TIMEOUT_S=0.5, MAX_ATTEMPTS=1, BATCH_SIZE=1)
    adds_a_phone = {
        "entityTypeId": 3,
        "id": 1,
        "fields": {"fm": {"n0": {"typeId": "PHONE", "valueType": "WORK", "value": "+1555"}}},
    }
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, adds_a_phone, message_id="m-fm")
        await publish(broker, settings.UPDATE_QUEUE, deal(1, title="again"), message_id="m-t")
        dead = {
            e["messageId"]: e for e in events(await take(broker, settings.DEAD_LETTER_QUEUE, 2))
        }
    assert dead["m-fm"]["error"]["class"] == "in_doubt"
    assert "not idempotent" in dead["m-fm"]["error"]["description"]
    assert dead["m-t"]["error"]["class"] == "transient"  # re-sending a title is harmless


async def test_a_server_error_is_in_doubt_for_an_addition_and_retried_for_a_title(
    amqp_url: str, portal: RunningSandbox
) -> None:
    rules = [
        {"error": "INTERNAL_SERVER_ERROR", "entity_type_id": 3, "item_id": 1, "times": 1},
        {"error": "INTERNAL_SERVER_ERROR", "entity_type_id": 2, "item_id": 1, "times": 1},
    ]
    control(portal, "PATCH", "faults", {"item_errors": rules})
    # Without reading back (tests/worker/test_read_back.py reads such a 500 back).
    settings = settings_for(amqp_url, portal, BATCH_SIZE=1, B24_READ_BACK_AFTER_S=0)
    adds_a_phone = {
        "entityTypeId": 3,
        "id": 1,
        "fields": {"fm": {"n0": {"typeId": "PHONE", "valueType": "WORK", "value": "+1556"}}},
    }
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, adds_a_phone, message_id="m-fm")
        await publish(broker, settings.UPDATE_QUEUE, deal(1, title="retried"), message_id="m-t")
        [failed] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1))
        [applied] = events(await take(broker, settings.RESULT_QUEUE, 1, timeout_s=30))
    assert failed["messageId"] == "m-fm"
    assert failed["error"]["class"] == "in_doubt"
    assert failed["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert applied["messageId"] == "m-t"
    assert applied["attempts"] == 2
