"""crm.item.fields: definitions per entity type, custom fields in both namings."""

from __future__ import annotations

import pytest

from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox

KEYS = {"type", "isRequired", "isReadOnly", "isImmutable", "isMultiple", "isDynamic", "title"}


def fields(
    b24: SandboxClient, type_id: int, original: bool = False
) -> dict[str, dict[str, object]]:
    params: dict[str, object] = {"entityTypeId": type_id}
    if original:
        params["useOriginalUfNames"] = "Y"
    result: dict[str, dict[str, dict[str, object]]] = b24.ok("crm.item.fields", params)
    return result["fields"]


def test_definitions_have_the_portal_keys(b24: SandboxClient) -> None:
    deal = fields(b24, 2)
    assert KEYS | {"upperName"} <= set(deal["title"])
    assert deal["observers"]["isMultiple"] is True
    assert deal["id"]["isReadOnly"] is True
    assert deal["leadId"]["isImmutable"] is True
    assert deal["stageId"]["type"] == "crm_status"
    assert deal["assignedById"]["upperName"] == "ASSIGNED_BY_ID"


def test_custom_fields_are_dynamic_in_both_namings(b24: SandboxClient) -> None:
    camel = fields(b24, 2)["ufCrm_1721244707207"]
    assert (camel["type"], camel["isMultiple"], camel["isDynamic"]) == ("file", True, True)
    assert camel["upperName"] == "UF_CRM_1721244707207"
    assert "UF_CRM_1721244707207" in fields(b24, 2, original=True)
    assert "ufCrm1_1721244707107" in fields(b24, 1032)


def test_parent_fields_for_other_types(b24: SandboxClient) -> None:
    spa = fields(b24, 1032)
    assert spa["parentId2"]["type"] == "crm_entity"
    assert "parentId1032" not in spa


def test_multifields_only_where_the_portal_has_them(b24: SandboxClient) -> None:
    assert fields(b24, 3)["fm"]["type"] == "crm_multifield"
    assert "fm" not in fields(b24, 2)


def test_unknown_type(b24: SandboxClient) -> None:
    assert b24.call("crm.item.fields", {"entityTypeId": 9}).json()["error"] == "NOT_FOUND"
