"""Coalescing (COALESCE=safe) against the sandbox portal: what it saves, and what its
answers do to a merged call.

The worker paces one call each half second from a bucket of one, which a first
command spends: the commands published next all wait in the worker while the
first of them waits for its call, as behind any portal's pace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, publish, publish_all, take
from tests.worker.e2e import control, events, running_worker, settings_for, stored

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

DEAL = 2


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as running:
        yield running


def settings(amqp_url: str, portal: RunningSandbox) -> Any:
    return settings_for(amqp_url, portal, COALESCE="safe", B24_RATE_BURST=1, B24_RATE_PER_SECOND=2)


def update(item_id: int, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": DEAL, "id": item_id, "fields": fields}


async def first_call(broker: Any, s: Any) -> None:
    """One command, answered: the bucket is spent, the next call waits its turn."""
    await publish(broker, s.UPDATE_QUEUE, update(5, title="first"), message_id="first")
    await take(broker, s.RESULT_QUEUE, 1)


async def test_stage_moves_go_alone_and_later_field_changes_ride_with_the_last(
    amqp_url: str, portal: RunningSandbox
) -> None:
    s = settings(amqp_url, portal)
    commands = [
        ("a", update(1, stageId="PREPARATION")),
        ("b", update(1, stageId="EXECUTING")),
        ("c", update(1, title="after the move")),
        ("d", update(1, comments="d")),
        ("e", update(1, stageId="WON")),
    ]
    async with running_worker(s) as worker, connected(amqp_url, worker.topology) as broker:
        await first_call(broker, s)
        await publish_all(broker, s.UPDATE_QUEUE, commands)
        ended = {e["messageId"]: e for e in events(await take(broker, s.RESULT_QUEUE, 5))}
    counters = control(portal, "GET", "counters")
    assert counters["calls"]["crm.item.update"] == 1 + 3  # a, then b with c and d, then e
    assert ended["a"]["coalescedWith"] == []
    assert ended["b"]["coalescedWith"] == ["c", "d"]
    assert ended["d"]["coalescedWith"] == ["b", "c"]
    assert ended["e"]["coalescedWith"] == []
    item = stored(portal, DEAL, 1)
    assert (item["stageId"], item["title"], item["comments"]) == ("WON", "after the move", "d")


async def test_a_merged_call_the_portal_refuses_is_split_and_only_the_bad_command_fails(
    amqp_url: str, portal: RunningSandbox
) -> None:
    s = settings(amqp_url, portal)
    before = stored(portal, DEAL, 2)
    control(portal, "PATCH", "faults", {"forbidden_stages": ["WON"]})
    commands = [
        ("m0", update(2, title="m0")),
        ("won", update(2, stageId="WON")),  # the portal refuses this move
        ("m2", update(2, comments="m2")),
    ]
    async with running_worker(s) as worker, connected(amqp_url, worker.topology) as broker:
        await first_call(broker, s)
        await publish_all(broker, s.UPDATE_QUEUE, commands)
        succeeded = events(await take(broker, s.RESULT_QUEUE, 2))
        [failed] = events(await take(broker, s.DEAD_LETTER_QUEUE, 1))
    counters = control(portal, "GET", "counters")
    # The merged call, refused; then each command alone.
    assert counters["calls"]["crm.item.update"] == 1 + 1 + 3
    assert [e["messageId"] for e in succeeded] == ["m0", "m2"]
    assert all(e["coalescedWith"] == [] for e in succeeded)
    assert (failed["messageId"], failed["error"]["class"]) == ("won", "access_denied")
    assert failed["attempts"] == 1
    item = stored(portal, DEAL, 2)
    assert (item["title"], item["comments"], item["stageId"]) == ("m0", "m2", before["stageId"])
