"""fm entry ids, honoured or not: a value whose answer was lost is never sent twice.

The reference says an existing entry's id updates that entry; a live portal
was reported to ignore the id and add the value again (the sandbox's
``--fm-ids ignored``). Either way the worker must not leave a value on an
item twice: a command setting an fm value whose call may have reached the
portal and whose answer was lost ends ``in_doubt`` and is not sent again,
while a command that only deletes entries is retried as any idempotent one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.config import FmIds, SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import control, events, eventually, running_worker, settings_for, stored

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

CONTACT = 3
VALUE = "+1-555-0199"
# How the answer is lost after the portal carried the call out.
LOST = {
    "dropped": {"disconnect_rate": 1.0},  # the connection closes without a byte
    "timed out": {"latency_ms": 1500},  # later than B24_TIMEOUT_S below
}


@pytest.fixture(params=["honoured", "ignored"])
async def portal(request: pytest.FixtureRequest) -> AsyncIterator[RunningSandbox]:
    fm_ids: FmIds = request.param
    config = SandboxConfig(seed_items=3, limits_enabled=False, fm_ids=fm_ids)
    async with running_sandbox(config) as running:
        yield running


def fm_command(contact: int, fm: dict[str, Any]) -> dict[str, Any]:
    return {"entityTypeId": CONTACT, "id": contact, "fields": {"fm": fm}}


def phone_of(portal: RunningSandbox, contact: int) -> dict[str, Any]:
    phone: dict[str, Any] = next(
        e for e in stored(portal, CONTACT, contact)["fm"] if e["typeId"] == "PHONE"
    )
    return phone


@pytest.mark.parametrize("lost", list(LOST))
async def test_an_fm_entry_id_with_a_value_whose_answer_was_lost_is_in_doubt_and_sent_once(
    amqp_url: str, portal: RunningSandbox, lost: str
) -> None:
    phone = phone_of(portal, 1)
    email = next(e for e in stored(portal, CONTACT, 2)["fm"] if e["typeId"] == "EMAIL")
    entry = {"typeId": "PHONE", "valueType": "WORK", "value": VALUE}
    sets_a_value = fm_command(1, {str(phone["id"]): entry})
    deletes = fm_command(2, {str(email["id"]): {"typeId": "EMAIL", "value": ""}})
    # Without reading back (tests/worker/test_read_back.py reads back).
    settings = settings_for(
        amqp_url, portal, B24_TIMEOUT_S=0.5, MAX_ATTEMPTS=2, B24_READ_BACK_AFTER_S=0
    )
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        # The field definitions of contacts are loaded first, while answers arrive.
        await publish(broker, settings.UPDATE_QUEUE, fm_command(3, {}), message_id="m-warm")
        await take(broker, settings.RESULT_QUEUE, 1)
        control(portal, "PATCH", "faults", LOST[lost])
        await publish(broker, settings.UPDATE_QUEUE, sets_a_value, message_id="m-value")
        await publish(broker, settings.UPDATE_QUEUE, deletes, message_id="m-delete")
        dead = {
            e["messageId"]: e for e in events(await take(broker, settings.DEAD_LETTER_QUEUE, 2))
        }
    # Both calls were carried out (a timed-out one after the worker gave up on it).
    await eventually(lambda: control(portal, "GET", "counters")["in_flight"] == 0)
    assert dead["m-value"]["error"]["class"] == "in_doubt"
    assert dead["m-value"]["attempts"] == 1
    assert "not idempotent" in dead["m-value"]["error"]["description"]
    # A deletion is idempotent: it was sent again until its attempts ran out.
    assert dead["m-delete"]["error"]["class"] == "transient"
    assert dead["m-delete"]["attempts"] == 2
    counters = control(portal, "GET", "counters")
    assert counters["calls"]["crm.item.update"] == 1 + 1 + 2, "warm-up, value once, deletion twice"
    values = [e["value"] for e in stored(portal, CONTACT, 1)["fm"]]
    assert values.count(VALUE) == 1, values
    if portal.state.config.fm_ids == "ignored":
        assert phone["value"] in values, "the id was ignored: the value was added beside it"
    else:
        assert phone["value"] not in values, "the id was honoured: the entry was updated"
    assert email["id"] not in [e["id"] for e in stored(portal, CONTACT, 2)["fm"]]
