"""Calling a method: URLs, bodies, envelopes, as the facts file's first table describes them."""

from __future__ import annotations

import pytest

from sandbox.clock import ManualClock
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox

GET = {"entityTypeId": 2, "id": 1}


def test_json_suffix_is_optional(b24: SandboxClient) -> None:
    plain = b24.ok("crm.item.get", GET)
    suffixed = b24.ok("crm.item.get.json", GET)
    assert plain == suffixed
    assert plain["item"]["id"] == 1


def test_get_with_query_string(b24: SandboxClient) -> None:
    response = b24.http.get(b24.portal.webhook_url + "crm.item.get", params=GET)
    assert response.json()["result"]["item"]["title"] == "Deal #1"


def test_success_envelope_has_result_and_time(
    b24: SandboxClient, shared_clock: ManualClock
) -> None:
    body = b24.call("crm.item.get", GET).json()
    assert set(body) == {"result", "time"}
    assert set(body["time"]) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating",
        "operating_reset_at",
    }
    assert body["time"]["start"] == shared_clock.time()


def test_body_values_override_query_values(b24: SandboxClient) -> None:
    url = b24.portal.webhook_url + "crm.item.get?entityTypeId=2&id=2"
    assert b24.http.post(url, json={"id": 3}).json()["result"]["item"]["id"] == 3
    form = b24.http.post(
        url, content="id=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.json()["result"]["item"]["id"] == 1
    assert b24.http.post(url).json()["result"]["item"]["id"] == 2


def test_unparsable_json_body_is_treated_as_empty(b24: SandboxClient) -> None:
    url = b24.portal.webhook_url + "crm.item.get?entityTypeId=2&id=2"
    response = b24.http.post(
        url, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.json()["result"]["item"]["id"] == 2
    response = b24.http.post(
        b24.portal.webhook_url + "crm.item.get",
        content=b"{broken",
        headers={"Content-Type": "application/json"},
    )
    assert response.json()["error"] == "100"


def test_unknown_method_is_404(b24: SandboxClient) -> None:
    response = b24.call("crm.item.explode", GET)
    assert response.status_code == 404
    assert response.json() == {
        "error": "ERROR_METHOD_NOT_FOUND",
        "error_description": "Method not found!",
    }


def test_form_and_json_bodies_give_the_same_item(b24: SandboxClient) -> None:
    fields = {"title": "same", "observers": [4, 5], "opened": "N", "fm": {}}
    params = {"entityTypeId": 2, "id": 1, "fields": fields}
    as_json = b24.ok("crm.item.update", params)["item"]
    params["id"] = 2
    as_form = b24.ok("crm.item.update", params, form=True)["item"]
    for key in ("title", "observers", "opened"):
        assert as_json[key] == as_form[key]


def test_method_names_are_case_insensitive(b24: SandboxClient) -> None:
    assert b24.ok("CRM.Item.Get", GET)["item"]["id"] == 1


def test_requests_are_counted(b24: SandboxClient) -> None:
    b24.call("crm.item.get", GET)
    b24.call("crm.item.nothing", GET)
    counters = b24.counters()
    assert counters["requests"] == 2
    assert counters["statuses"] == {"200": 1, "404": 1}
    assert counters["errors"] == {"ERROR_METHOD_NOT_FOUND": 1}
