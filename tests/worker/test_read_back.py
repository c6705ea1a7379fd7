"""Doubt resolved by reading back: a command adding fm values whose answer was lost
is checked on the item after the cut-off (B24_READ_BACK_AFTER_S, short here)
instead of ending `in_doubt`.

The sandbox carries each call out and then drops the connection without an
answer (`disconnect_rate`), for the calls that saved an item only
(`disconnect_writes_only`): the reads get their answers. A 500 for the update
stands for a call the portal took in without saving anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.config import FmIds, SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import control, events, running_worker, settings_for, stored

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

CONTACT = 3
CUT_OFF_S = 0.5
COUNT = 100  # commands of the 30% run: 50 calls of 2


@pytest.fixture(params=["honoured", "ignored"])
async def portal(request: pytest.FixtureRequest) -> AsyncIterator[RunningSandbox]:
    fm_ids: FmIds = request.param
    # A fixed seed: the same answers are lost at every run.
    config = SandboxConfig(
        seed_items=COUNT + 1, limits_enabled=False, fm_ids=fm_ids, random_seed=20261206
    )
    async with running_sandbox(config) as running:
        yield running


def adds_phone(contact: int, value: str) -> dict[str, Any]:
    entry = {"typeId": "PHONE", "valueType": "WORK", "value": value}
    return {"entityTypeId": CONTACT, "id": contact, "fields": {"fm": {"n0": entry}}}


def phones(portal: RunningSandbox, contact: int) -> list[str]:
    fm = stored(portal, CONTACT, contact)["fm"]
    return [entry["value"] for entry in fm if entry["typeId"] == "PHONE"]


def settings(amqp_url: str, portal: RunningSandbox) -> Any:
    # The sandbox's limits are off: the worker's pacing is too.
    return settings_for(
        amqp_url,
        portal,
        B24_READ_BACK_AFTER_S=CUT_OFF_S,
        RETRY_DELAYS_S="1,1,1",
        MAX_ATTEMPTS=5,
        B24_RATE_BURST=10_000,
        B24_RATE_PER_SECOND=10_000,
    )


async def warm_up(broker: Any, queue: str, result_queue: str) -> None:
    """The contacts' field definitions are loaded first, while answers arrive."""
    await publish(broker, queue, adds_phone(COUNT + 1, "+1-555-0000"), message_id="m-warm")
    await take(broker, result_queue, 1)


async def test_a_lost_answer_whose_values_are_on_the_item_is_a_verified_success(
    amqp_url: str, portal: RunningSandbox
) -> None:
    s = settings(amqp_url, portal)
    async with running_worker(s) as worker, connected(amqp_url, worker.topology) as broker:
        await warm_up(broker, s.UPDATE_QUEUE, s.RESULT_QUEUE)
        control(portal, "PATCH", "faults", {"disconnect_rate": 1.0, "disconnect_writes_only": True})
        await publish(broker, s.UPDATE_QUEUE, adds_phone(1, "+1-555-0101"), message_id="m-1")
        [event] = events(await take(broker, s.RESULT_QUEUE, 1, timeout_s=30))
    counters = control(portal, "GET", "counters")
    assert event["messageId"] == "m-1"
    assert event["status"] == "succeeded"
    assert event["verifiedByReadBack"] is True
    assert "+1-555-0101" in [e["value"] for e in event["item"]["fm"]]
    assert phones(portal, 1).count("+1-555-0101") == 1
    assert counters["disconnects"] == 1
    assert counters["calls"]["crm.item.update"] == 2  # the warm-up, and this one once


async def test_a_lost_request_the_portal_never_saw_is_sent_once_more(
    amqp_url: str, portal: RunningSandbox
) -> None:
    s = settings(amqp_url, portal)
    async with running_worker(s) as worker, connected(amqp_url, worker.topology) as broker:
        await warm_up(broker, s.UPDATE_QUEUE, s.RESULT_QUEUE)
        # The portal fails the update once with a 500 after taking it in: whether it
        # saved anything is unknown to the worker (here, it did not).
        rule = {"error": "INTERNAL_SERVER_ERROR", "method": "crm.item.update", "times": 1}
        control(portal, "PATCH", "faults", {"item_errors": [{**rule, "item_id": 2}]})
        await publish(broker, s.UPDATE_QUEUE, adds_phone(2, "+1-555-0202"), message_id="m-2")
        [event] = events(await take(broker, s.RESULT_QUEUE, 1, timeout_s=30))
    assert event["messageId"] == "m-2"
    assert event["verifiedByReadBack"] is False  # applied by the second call, answered
    assert event["attempts"] == 2
    assert phones(portal, 2).count("+1-555-0202") == 1


async def test_with_30_percent_of_answers_lost_fm_additions_end_applied_once(
    amqp_url: str, portal: RunningSandbox
) -> None:
    s = settings(amqp_url, portal).model_copy(update={"BATCH_SIZE": 2})
    count = COUNT
    async with running_worker(s) as worker, connected(amqp_url, worker.topology) as broker:
        await warm_up(broker, s.UPDATE_QUEUE, s.RESULT_QUEUE)
        control(portal, "PATCH", "faults", {"disconnect_rate": 0.3, "disconnect_writes_only": True})
        for n in range(1, count + 1):
            value = f"+1-555-{n:04d}"
            await publish(broker, s.UPDATE_QUEUE, adds_phone(n, value), message_id=f"m{n}")
        ended = events(await take(broker, s.RESULT_QUEUE, count, timeout_s=60))
        ended += events(await take(broker, s.DEAD_LETTER_QUEUE, count - len(ended), timeout_s=5))
    counters = control(portal, "GET", "counters")
    outcomes = Counter(
        "verified"
        if e.get("verifiedByReadBack")
        else e["status"]
        if e["status"] == "succeeded"
        else e["error"]["class"]
        for e in ended
    )
    assert len({e["messageId"] for e in ended}) == count
    assert counters["disconnects"] >= 5  # answers were lost
    assert outcomes["verified"] >= 5
    assert outcomes.get("in_doubt", 0) == 0
    assert outcomes["verified"] + outcomes["succeeded"] == count
    for n in range(1, count + 1):
        assert phones(portal, n).count(f"+1-555-{n:04d}") == 1, n
    print(f"\n{count} fm additions, {counters['disconnects']} answers lost: {dict(outcomes)}")
