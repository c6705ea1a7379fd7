"""The control endpoint: seed data, stored items, counters, faults, latency, reset."""

from __future__ import annotations

import time

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import serve_in_thread
from tests.sandbox.client import SandboxClient
from tests.sandbox.conftest import SHARED_CONFIG

pytestmark = pytest.mark.sandbox


def test_seed_gives_n_items_per_entity_type(b24: SandboxClient) -> None:
    summary = b24.http.get(b24.portal.control_url + "/").json()
    assert summary["items"] == {str(t): 3 for t in (1, 2, 3, 4, 7, 31, 1032)}
    assert summary["limits_enabled"] is SHARED_CONFIG.limits_enabled


def test_seeded_items_are_real_items(b24: SandboxClient) -> None:
    items = b24.http.get(f"{b24.portal.control_url}/items/3").json()
    assert [i["id"] for i in items] == [1, 2, 3]
    assert [e["typeId"] for e in items[0]["fm"]] == ["PHONE", "EMAIL"]
    deal = b24.item(2, 2)
    assert (deal["title"], deal["stageId"], deal["assignedById"]) == ("Deal #2", "NEW", 1)
    spa = b24.item(1032, 1)
    assert spa["stageId"] == "DT1032_10:NEW"


def test_items_with_original_names(b24: SandboxClient) -> None:
    url = f"{b24.portal.control_url}/items/2/1?useOriginalUfNames=Y"
    assert "UF_CRM_1721244707107" in b24.http.get(url).json()


def test_unknown_item_or_type_is_404(b24: SandboxClient) -> None:
    assert b24.http.get(f"{b24.portal.control_url}/items/2/999").status_code == 404
    assert b24.http.get(f"{b24.portal.control_url}/items/5").status_code == 404


def test_counters_count_calls_errors_and_operating(b24: SandboxClient) -> None:
    b24.ok("crm.item.update", {"entityTypeId": 2, "id": 1, "fields": {"title": "x"}})
    b24.call("crm.item.update", {"entityTypeId": 2, "id": 99, "fields": {"title": "x"}})
    counters = b24.counters()
    assert counters["requests"] == 2
    assert counters["calls"] == {"crm.item.update": 2}
    assert counters["errors"] == {"NOT_FOUND": 1}
    assert counters["saves"] == 1


def test_counters_tell_when_the_first_and_the_latest_request_arrived(b24: SandboxClient) -> None:
    assert b24.counters()["first_request_at"] is None
    before = time.time()
    b24.ok("crm.item.get", {"entityTypeId": 2, "id": 1})
    time.sleep(0.05)
    b24.ok("crm.item.get", {"entityTypeId": 2, "id": 2})
    after = time.time()
    counters = b24.counters()
    first, latest = counters["first_request_at"], counters["last_request_at"]
    assert before <= first < latest <= after
    assert latest - first >= 0.05


def test_reset_restores_data_and_can_reseed(b24: SandboxClient) -> None:
    b24.ok("crm.item.update", {"entityTypeId": 2, "id": 1, "fields": {"title": "changed"}})
    b24.faults(overload=True)
    body = b24.http.post(f"{b24.portal.control_url}/reset", json={"seed": 1}).json()
    assert body["items"]["2"] == 1
    assert b24.item(2, 1)["title"] == "Deal #1"
    assert b24.http.get(f"{b24.portal.control_url}/faults").json()["overload"] is False


def test_latency_is_added_to_each_request(b24: SandboxClient) -> None:
    b24.faults(latency_ms=150)
    began = time.perf_counter()
    b24.ok("crm.item.get", {"entityTypeId": 2, "id": 1})
    assert time.perf_counter() - began >= 0.15


def test_error_rate_fails_about_that_share_of_requests(b24: SandboxClient) -> None:
    b24.faults(error_rate=0.5)
    statuses = [
        b24.call("crm.item.get", {"entityTypeId": 2, "id": 1}).status_code for _ in range(60)
    ]
    assert set(statuses) == {200, 500}
    assert 10 <= statuses.count(500) <= 50


def test_seed_is_an_option() -> None:
    with serve_in_thread(SandboxConfig(seed_items=0, spa_types=(128, 1040))) as portal:
        client = SandboxClient(portal)
        summary = client.http.get(portal.control_url + "/").json()
        client.close()
    assert summary["items"] == {str(t): 0 for t in (1, 2, 3, 4, 7, 31, 128, 1040)}
