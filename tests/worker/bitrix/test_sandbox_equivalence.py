"""A command sent inside a batch leaves the item exactly as the same command sent as JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, serve_in_thread
from worker.bitrix import BitrixClient, WebhookAuth, batch_blocker, make_http_client

pytestmark = pytest.mark.sandbox

DEAL, CONTACT = 2, 3
# Set by the portal on every save, or different for each item by nature.
_VOLATILE = {"id", "createdTime", "updatedTime", "movedTime"}


@pytest.fixture(scope="module")
def portal() -> Iterator[RunningSandbox]:
    with serve_in_thread(SandboxConfig(seed_items=1, limits_enabled=False)) as running:
        yield running


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in item.items() if k not in _VOLATILE}
    if "fm" in kept:  # multifield entry ids are numbered per portal, not per item
        kept["fm"] = [{k: v for k, v in entry.items() if k != "id"} for entry in kept["fm"]]
    return kept


async def _both_ways(
    portal: RunningSandbox, type_id: int, start: dict[str, Any], updates: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two twins made alike; one updated by a batch, the other by single JSON calls."""
    async with make_http_client(timeout_s=5.0) as http:
        client = BitrixClient(http=http, auth=WebhookAuth(portal.webhook_url))
        twins = []
        for _ in range(2):
            added = await client.call("crm.item.add", {"entityTypeId": type_id, "fields": start})
            twins.append(added.result["item"]["id"])
        batched, single = twins
        commands = {
            f"u{n}": ("crm.item.update", {"entityTypeId": type_id, "id": batched, "fields": fields})
            for n, fields in enumerate(updates)
        }
        answer = await client.batch(commands)
        assert all(a.ok for a in answer.commands.values()), answer
        for fields in updates:
            await client.call(
                "crm.item.update", {"entityTypeId": type_id, "id": single, "fields": fields}
            )
        items = []
        for item_id in twins:
            got = await client.call("crm.item.get", {"entityTypeId": type_id, "id": item_id})
            items.append(_comparable(got.result["item"]))
        return items[0], items[1]


DEAL_UPDATES: list[dict[str, Any]] = [
    {
        "title": "Ünïcode & co = 100% + more? #1",
        "comments": "costs $ 5, see $result alone\nline two\ttab",
        "opportunity": 1234.5,
        "currencyId": "EUR",
        "observers": [1, 2],
        "ufCrm_1721244707107": 12.25,
        "ufCrm_1721244707202": ["tag a", "tag&b", "тег"],
        "ufCrm_1721244707208": [3, 1, 2],
        "ufCrm_1721244707203": "Y",
        "ufCrm_1721244707204": "2025-01-31",
        "ufCrm_1721244707205": "2025-01-31T10:20:30+03:00",
    },
    {"stageId": "PREPARATION", "probability": 40, "isManualOpportunity": "Y"},
    {"categoryId": 9, "stageId": "C9:NEW", "ufCrm_1721244707202": ["only"]},
    {"opportunity": 0.75, "ufCrm_1721244707203": "N", "title": "  padded  "},
]


async def test_a_rich_deal_update_lands_the_same_through_batch_and_json(
    portal: RunningSandbox,
) -> None:
    for fields in DEAL_UPDATES:
        assert batch_blocker({"fields": fields}) is None
    start = {"title": "Twin", "opportunity": 10.5, "observers": [1]}
    batched, single = await _both_ways(portal, DEAL, start, DEAL_UPDATES)
    assert batched == single
    assert batched["title"] == "  padded  "
    assert batched["ufCrm_1721244707202"] == ["only"]
    assert batched["stageId"] == "C9:NEW"


async def test_contact_multifields_land_the_same_through_batch_and_json(
    portal: RunningSandbox,
) -> None:
    updates: list[dict[str, Any]] = [
        {
            "name": "Ann",
            "fm": {
                "n0": {"typeId": "PHONE", "valueType": "WORK", "value": "+1 (555) 010-0000"},
                "n1": {"typeId": "EMAIL", "valueType": "HOME", "value": "ann+crm@example.com"},
            },
        },
        {"fm": {"n0": {"typeId": "WEB", "valueType": "WORK", "value": "https://x.test/?a=1&b=2"}}},
    ]
    batched, single = await _both_ways(portal, CONTACT, {"name": "Twin"}, updates)
    assert batched == single
    assert len(batched["fm"]) == 3


_text = st.text(max_size=30)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "title": _text,
        "comments": _text,
        "ufCrm_1721244707201": st.one_of(_text, st.integers(-(10**6), 10**6)),
        "ufCrm_1721244707202": st.lists(_text, min_size=1, max_size=4),
        "ufCrm_1721244707208": st.lists(st.integers(0, 10**9), min_size=1, max_size=4),
        "ufCrm_1721244707107": st.integers(-(10**8), 10**8)
        .filter(lambda n: n % 100 != 0)
        .map(lambda n: n / 100),
    },
).filter(lambda fields: bool(fields) and batch_blocker({"fields": fields}) is None)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)
@given(st.lists(_fields, min_size=1, max_size=4))
def test_generated_updates_land_the_same_through_batch_and_json(
    portal: RunningSandbox, updates: list[dict[str, Any]]
) -> None:
    batched, single = asyncio.run(_both_ways(portal, DEAL, {"title": "Twin"}, updates))
    assert batched == single
