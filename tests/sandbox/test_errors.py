"""Every row of the facts file's "Errors" table, provoked over HTTP, with its status and code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.clock import ManualClock
from sandbox.config import CustomFieldSpec, SandboxConfig
from sandbox.errors import CATALOGUE
from sandbox.testing import serve_in_thread
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox

DEAL = 2


def update(b24: SandboxClient, **params: Any) -> httpx.Response:
    body = {"entityTypeId": DEAL, "id": 1, "fields": {"title": "t"}} | params
    return b24.call("crm.item.update", body)


def assert_error(response: httpx.Response, status: int, code: str, text: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == code
    if text is not None:
        assert body["error_description"] == text


def test_unknown_entity_type_is_not_found(b24: SandboxClient) -> None:
    assert_error(
        update(b24, entityTypeId=1034), 400, "NOT_FOUND", "Smart Process Automation was not found"
    )


def test_unknown_item_is_not_found(b24: SandboxClient) -> None:
    assert_error(update(b24, id=9999), 400, "NOT_FOUND", "Item was not found.")


def test_no_right_to_edit_the_type_is_access_denied(b24: SandboxClient) -> None:
    b24.faults(denied_entity_types=[DEAL])
    assert_error(update(b24), 400, "ACCESS_DENIED")
    assert b24.item(DEAL, 1)["title"] != "t"


def test_extranet_user_is_refused_with_403(b24: SandboxClient) -> None:
    b24.faults(extranet_user=True)
    assert_error(update(b24), 403, "allowed_only_intranet_user")


@pytest.mark.parametrize(
    ("field", "value"), [("probability", "abc"), ("opportunity", "1,5"), ("title", {"a": 1})]
)
def test_invalid_value_names_the_field(b24: SandboxClient, field: str, value: Any) -> None:
    response = update(b24, fields={field: value})
    assert_error(
        response, 400, "CRM_FIELD_ERROR_VALUE_NOT_VALID", f'Invalid value for field "{field}"'
    )


def test_scalar_for_multiple_field_is_error_100(b24: SandboxClient) -> None:
    assert_error(update(b24, fields={"observers": 1}), 400, "100")


@pytest.mark.parametrize("missing", ["entityTypeId", "id", "fields"])
def test_missing_parameter_is_error_100(b24: SandboxClient, missing: str) -> None:
    body = {"entityTypeId": DEAL, "id": 1, "fields": {"title": "t"}}
    del body[missing]
    response = b24.call("crm.item.update", body)
    assert_error(response, 400, "100", f"Could not find value for parameter {{{missing}}}")


def test_forbidden_stage_gets_the_empty_code(b24: SandboxClient) -> None:
    b24.faults(forbidden_stages=["WON"])
    assert_error(update(b24, fields={"stageId": "WON"}), 400, "")
    assert b24.item(DEAL, 1)["stageId"] == "NEW"


def test_plan_restriction_on_smart_process_items(b24: SandboxClient) -> None:
    b24.faults(dynamic_items_restricted=True)
    assert_error(update(b24, entityTypeId=1032), 400, "UPDATE_DYNAMIC_ITEM_RESTRICTED")
    assert update(b24).status_code == 200


def test_random_failures_are_500_internal_server_error(b24: SandboxClient) -> None:
    b24.faults(error_rate=1.0)
    assert_error(update(b24), 500, "INTERNAL_SERVER_ERROR", "Internal server error")


@pytest.mark.parametrize(
    "name",
    [
        "ERROR_UNEXPECTED_ANSWER",
        "PORTAL_DELETED",
        "OVERLOAD_LIMIT",
        "NO_AUTH_FOUND",
        "INVALID_CREDENTIALS",
        "insufficient_scope",
        "user_access_error",
        "REST_UNAVAILABLE_ON_PLAN",
    ],
)
def test_portal_wide_errors_keep_their_status(b24: SandboxClient, name: str) -> None:
    b24.faults(portal_error=name)
    row = CATALOGUE[name]
    assert_error(update(b24), row.status, row.code, row.description)


def test_plan_without_rest_is_access_denied_403(b24: SandboxClient) -> None:
    b24.faults(portal_error="REST_UNAVAILABLE_ON_PLAN")
    assert_error(
        update(b24), 403, "ACCESS_DENIED", "REST API is available only on commercial plans"
    )


def test_overload_switch_blocks_everything_with_503(b24: SandboxClient) -> None:
    b24.faults(overload=True)
    assert_error(update(b24), 503, "OVERLOAD_LIMIT")
    assert_error(b24.call("batch", {"cmd": {}}), 503, "OVERLOAD_LIMIT")


def test_no_auth_switch_and_wrong_code_get_401(b24: SandboxClient) -> None:
    wrong = b24.portal.webhook_url.replace(b24.portal.state.config.webhook_code, "wrongcode")
    assert_error(b24.http.post(wrong + "crm.item.get", json={}), 401, "NO_AUTH_FOUND")
    other_user = b24.portal.webhook_url.replace("/rest/1/", "/rest/2/")
    assert_error(b24.http.post(other_user + "crm.item.get", json={}), 401, "NO_AUTH_FOUND")
    b24.faults(no_auth=True)
    assert_error(update(b24), 401, "NO_AUTH_FOUND", "Wrong authorization data")


def test_plain_http_is_refused_when_https_is_required(b24: SandboxClient) -> None:
    b24.faults(require_https=True)
    assert_error(update(b24), 400, "INVALID_REQUEST", "Https required")


def test_forced_error_for_a_chosen_item_a_number_of_times(b24: SandboxClient) -> None:
    b24.faults(
        item_errors=[
            {"error": "INTERNAL_SERVER_ERROR", "entity_type_id": DEAL, "item_id": 2, "times": 2}
        ]
    )
    assert update(b24).status_code == 200
    assert_error(update(b24, id=2), 500, "INTERNAL_SERVER_ERROR")
    assert_error(update(b24, id=2), 500, "INTERNAL_SERVER_ERROR")
    assert update(b24, id=2).status_code == 200


def test_unknown_fault_is_rejected_by_the_control_endpoint(b24: SandboxClient) -> None:
    response = b24.http.patch(f"{b24.portal.control_url}/faults", json={"portal_error": "NOPE"})
    assert response.status_code == 400
    assert b24.http.get(f"{b24.portal.control_url}/faults").json()["portal_error"] is None


REQUIRED = CustomFieldSpec(DEAL, "1721244799999", "string", required=True, title="Must")


@pytest.fixture(scope="module")
def strict() -> Iterator[SandboxClient]:
    config = SandboxConfig(seed_items=2, limits_enabled=False, custom_fields=(REQUIRED,))
    with serve_in_thread(config, clock=ManualClock()) as portal:
        client = SandboxClient(portal)
        yield client
        client.close()


def test_required_field_empty_after_a_stage_move(strict: SandboxClient) -> None:
    name = "ufCrm_1721244799999"
    cleared = update(strict, fields={name: ""})
    assert cleared.status_code == 200, "no stage move: the required field may be emptied"
    response = update(strict, fields={"stageId": "PREPARATION"})
    assert_error(response, 400, "CRM_FIELD_ERROR_REQUIRED", f'Field "{name}" is required')
    assert update(strict, fields={"stageId": "PREPARATION", name: "filled"}).status_code == 200


def test_required_field_is_checked_on_add(strict: SandboxClient) -> None:
    response = strict.call("crm.item.add", {"entityTypeId": DEAL, "fields": {"title": "x"}})
    assert_error(response, 400, "CRM_FIELD_ERROR_REQUIRED")
