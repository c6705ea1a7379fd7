"""crm.item.list: filter by id (and other fields), order, pages of 50."""

from __future__ import annotations

import pytest

from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox


def ids(result: dict[str, object]) -> list[int]:
    items = result["items"]
    assert isinstance(items, list)
    return [i["id"] for i in items]


def test_filter_by_id_forms(b24: SandboxClient) -> None:
    def listed(flt: object, form: bool = False) -> list[int]:
        return ids(b24.ok("crm.item.list", {"entityTypeId": 2, "filter": flt}, form=form))

    assert listed({"id": 2}) == [2]
    assert listed({"=id": "3"}, form=True) == [3]
    assert listed({"@id": [1, 3]}) == [1, 3]
    assert listed({">id": 1}) == [2, 3]
    assert listed({"<=id": 2, "!id": 1}) == [2]
    assert listed({"!@id": ["1", "2"]}, form=True) == [3]


def test_filter_by_other_fields(b24: SandboxClient) -> None:
    b24.ok("crm.item.update", {"entityTypeId": 2, "id": 2, "fields": {"stageId": "WON"}})
    result = b24.ok("crm.item.list", {"entityTypeId": 2, "filter": {"stageId": "WON"}})
    assert ids(result) == [2]
    result = b24.ok("crm.item.list", {"entityTypeId": 2, "filter": {"%title": "deal #3"}})
    assert ids(result) == [3]


def test_pages_of_fifty_with_total_and_next(b24: SandboxClient) -> None:
    for n in range(57):
        b24.ok("crm.item.add", {"entityTypeId": 1, "fields": {"title": f"lead {n}"}})
    first = b24.call("crm.item.list", {"entityTypeId": 1}).json()
    assert (len(first["result"]["items"]), first["total"], first["next"]) == (50, 60, 50)
    second = b24.call("crm.item.list", {"entityTypeId": 1, "start": 50}).json()
    assert len(second["result"]["items"]) == 10
    assert "next" not in second
    uncounted = b24.call("crm.item.list", {"entityTypeId": 1, "start": -1}).json()
    assert "total" not in uncounted


def test_order_and_select(b24: SandboxClient) -> None:
    result = b24.ok(
        "crm.item.list",
        {"entityTypeId": 2, "order": {"id": "DESC"}, "select": ["title"]},
    )
    assert ids(result) == [3, 2, 1]
    assert set(result["items"][0]) == {"id", "title", "entityTypeId"}
