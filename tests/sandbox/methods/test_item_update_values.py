"""crm.item.update over HTTP: every row of the facts file's "Values" table, traps included."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.clock import ManualClock
from sandbox.config import SandboxConfig
from sandbox.testing import serve_in_thread
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox

DEAL, CONTACT, SPA = 2, 3, 1032
BUDGET, NOTE, TAGS, APPROVED = (
    "ufCrm_1721244707107",
    "ufCrm_1721244707201",
    "ufCrm_1721244707202",
    "ufCrm_1721244707203",
)
DUE, CHECKED, CONTRACT, ATTACHMENTS = (
    "ufCrm_1721244707204",
    "ufCrm_1721244707205",
    "ufCrm_1721244707206",
    "ufCrm_1721244707207",
)


def update(b24: SandboxClient, fields: dict[str, Any], *, form: bool = False, **extra: Any) -> Any:
    params = {"entityTypeId": DEAL, "id": 1, "fields": fields, **extra}
    return b24.ok("crm.item.update", params, form=form)["item"]


@pytest.mark.parametrize("value", ["Y", True, "true", "y"])
def test_boolean_yes_spellings_store_yes(b24: SandboxClient, value: Any) -> None:
    update(b24, {"opened": "N"})
    assert update(b24, {"opened": value})["opened"] == "Y"


@pytest.mark.parametrize("value", [1, "1", "yes", "TRUE", "on", 0, False, "N"])
def test_every_other_boolean_is_stored_as_no_without_error(b24: SandboxClient, value: Any) -> None:
    update(b24, {"opened": "Y"})
    assert update(b24, {"opened": value})["opened"] == "N"
    assert b24.item(DEAL, 1)["opened"] == "N"


def test_form_encoded_boolean_one_is_no(b24: SandboxClient) -> None:
    assert update(b24, {"opened": "1"}, form=True)["opened"] == "N"
    assert update(b24, {"opened": "Y"}, form=True)["opened"] == "Y"


def test_date_is_stored_at_midnight_in_portal_time(b24: SandboxClient) -> None:
    assert update(b24, {"begindate": "2024-07-23"})["begindate"] == "2024-07-23T00:00:00+03:00"


@pytest.mark.parametrize("bad", ["23.07.2024", "2024-02-30", "tomorrow", "2024-7-3"])
def test_unparsable_date_is_dropped_and_the_call_succeeds(b24: SandboxClient, bad: str) -> None:
    update(b24, {"begindate": "2024-07-23"})
    item = update(b24, {"begindate": bad, "title": "still saved"})
    assert item["begindate"] == "2024-07-23T00:00:00+03:00"
    assert item["title"] == "still saved"


def test_datetime_with_offset_is_kept_as_the_same_instant(b24: SandboxClient) -> None:
    item = update(b24, {CHECKED: "2024-07-23T18:19:21+02:00"})
    assert item[CHECKED] == "2024-07-23T19:19:21+03:00"


def test_unparsable_datetime_is_dropped(b24: SandboxClient) -> None:
    update(b24, {CHECKED: "2024-07-23T18:19:21+02:00"})
    assert update(b24, {CHECKED: "18:19 23/07/2024"})[CHECKED] == "2024-07-23T19:19:21+03:00"


def test_multiple_field_takes_an_array(b24: SandboxClient) -> None:
    assert update(b24, {"observers": [3, "4"], TAGS: ["a", "b"]})["observers"] == [3, 4]
    assert b24.item(DEAL, 1)[TAGS] == ["a", "b"]


@pytest.mark.parametrize("scalar", [5, "5", "a", 0, False])
def test_scalar_for_multiple_field_is_error_100(b24: SandboxClient, scalar: Any) -> None:
    response = b24.call(
        "crm.item.update", {"entityTypeId": DEAL, "id": 1, "fields": {TAGS: scalar}}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "100"
    assert response.json()["error_description"].startswith(
        "Expected iterable value for multiple field"
    )
    assert "time" not in response.json()


def test_form_encoded_multiple_field_is_an_array(b24: SandboxClient) -> None:
    item = update(b24, {"observers": ["7", "8"]}, form=True)
    assert item["observers"] == [7, 8]


@pytest.mark.parametrize("empty", ["", None, []])
def test_empty_values_clear_a_field(b24: SandboxClient, empty: Any) -> None:
    update(b24, {"comments": "x", "probability": 5, "observers": [1], BUDGET: 3.5})
    item = update(b24, {"comments": empty, "probability": empty, "observers": empty, BUDGET: empty})
    assert (item["comments"], item["probability"], item["observers"], item[BUDGET]) == (
        None,
        None,
        [],
        None,
    )


def test_zero_and_false_are_values_not_empties(b24: SandboxClient) -> None:
    update(b24, {"comments": "x", "probability": 5, "opened": "Y", BUDGET: 3.5})
    item = update(b24, {"comments": "0", "probability": 0, "opened": False, BUDGET: 0})
    assert (item["comments"], item["probability"], item["opened"], item[BUDGET]) == (
        "0",
        0,
        "N",
        0.0,
    )


def test_unknown_field_is_ignored_without_error(b24: SandboxClient) -> None:
    before = b24.item(DEAL, 1)
    item = update(b24, {"titel": "misspelt", "noSuchField": 1})
    assert item == before
    assert "titel" not in b24.item(DEAL, 1)


def test_read_only_and_immutable_fields_are_silently_reset(b24: SandboxClient) -> None:
    before = b24.item(DEAL, 1)
    item = update(
        b24, {"id": 999, "createdBy": 42, "createdTime": "2000-01-01T00:00:00+00:00", "leadId": 7}
    )
    assert (item["id"], item["createdBy"], item["createdTime"], item["leadId"]) == (
        1,
        before["createdBy"],
        before["createdTime"],
        before["leadId"],
    )


def test_immutable_field_can_be_set_on_add(b24: SandboxClient) -> None:
    item = b24.ok("crm.item.add", {"entityTypeId": DEAL, "fields": {"title": "t", "leadId": 7}})
    assert item["item"]["leadId"] == 7


def test_custom_fields_are_camel_case_by_default(b24: SandboxClient) -> None:
    item = update(b24, {BUDGET: 200.05, "UF_CRM_1721244707201": "ignored in this mode"})
    assert item[BUDGET] == 200.05
    assert item[NOTE] is None
    assert "UF_CRM_1721244707107" not in item


def test_original_uf_names_only_with_use_original_uf_names(b24: SandboxClient) -> None:
    item = update(
        b24,
        {"UF_CRM_1721244707107": 7.5, BUDGET: 1.0, "title": "standard names unchanged"},
        useOriginalUfNames="Y",
    )
    assert item["UF_CRM_1721244707107"] == 7.5
    assert BUDGET not in item
    assert item["title"] == "standard names unchanged"


def test_smart_process_custom_field_names(b24: SandboxClient) -> None:
    params = {"entityTypeId": SPA, "id": 1, "fields": {"ufCrm1_1721244707107": 3.0}}
    assert b24.ok("crm.item.update", params)["item"]["ufCrm1_1721244707107"] == 3.0
    params["useOriginalUfNames"] = "Y"
    params["fields"] = {"UF_CRM_1_1721244707107": 4.0}
    assert b24.ok("crm.item.update", params)["item"]["UF_CRM_1_1721244707107"] == 4.0


def fm_update(b24: SandboxClient, fm: Any, *, form: bool = False) -> list[dict[str, Any]]:
    params = {"entityTypeId": CONTACT, "id": 1, "fields": {"fm": fm}}
    entries: list[dict[str, Any]] = b24.ok("crm.item.update", params, form=form)["item"]["fm"]
    return entries


def test_fm_new_keys_add_entries_and_others_are_kept(b24: SandboxClient) -> None:
    before = b24.item(CONTACT, 1)["fm"]
    after = fm_update(b24, {"n0": {"typeId": "WEB", "value": "example.org"}})
    assert after[: len(before)] == before
    assert after[-1]["typeId"] == "WEB"
    assert after[-1]["value"] == "example.org"
    assert after[-1]["valueType"] == "WORK"


def test_fm_numeric_key_or_id_updates_the_entry(b24: SandboxClient) -> None:
    phone, email = b24.item(CONTACT, 1)["fm"]
    after = fm_update(b24, {str(phone["id"]): {"typeId": "PHONE", "value": "+100"}})
    assert [e["value"] for e in after] == ["+100", email["value"]]
    after = fm_update(b24, [{"id": email["id"], "typeId": "EMAIL", "value": "new@example.com"}])
    assert [e["value"] for e in after] == ["+100", "new@example.com"]


def test_fm_empty_value_deletes_and_needs_type_id(b24: SandboxClient) -> None:
    phone, email = b24.item(CONTACT, 1)["fm"]
    assert fm_update(b24, {str(phone["id"]): {"value": ""}}) == [phone, email]
    assert fm_update(b24, {str(phone["id"]): {"typeId": "PHONE", "value": ""}}) == [email]


def test_fm_over_form_encoding(b24: SandboxClient) -> None:
    after = fm_update(b24, {"n0": {"typeId": "EMAIL", "value": "form@example.com"}}, form=True)
    assert after[-1]["value"] == "form@example.com"


@pytest.fixture(scope="module")
def ids_ignored() -> Iterator[SandboxClient]:
    """A portal whose crm.item.update ignores existing fm entry ids (--fm-ids ignored)."""
    config = SandboxConfig(seed_items=1, limits_enabled=False, fm_ids="ignored")
    with serve_in_thread(config) as portal:
        client = SandboxClient(portal)
        yield client
        client.close()


def test_fm_ids_ignored_an_existing_id_with_a_value_adds_the_value_again(
    ids_ignored: SandboxClient,
) -> None:
    ids_ignored.reset()
    phone, email = ids_ignored.item(CONTACT, 1)["fm"]
    after = fm_update(ids_ignored, {str(phone["id"]): {"typeId": "PHONE", "value": "+100"}})
    assert after[:2] == [phone, email], "the entry the id names is kept as it was"
    assert [(e["typeId"], e["value"]) for e in after[2:]] == [("PHONE", "+100")]
    assert after[2]["id"] not in (phone["id"], email["id"])
    again = [{"id": phone["id"], "typeId": "PHONE", "valueType": "WORK", "value": "+100"}]
    assert [e["value"] for e in fm_update(ids_ignored, again)] == [
        phone["value"],
        email["value"],
        "+100",
        "+100",
    ], "sent twice, the value is there twice"


def test_fm_ids_ignored_an_existing_id_with_an_empty_value_still_deletes_that_entry(
    ids_ignored: SandboxClient,
) -> None:
    ids_ignored.reset()
    phone, email = ids_ignored.item(CONTACT, 1)["fm"]
    assert fm_update(ids_ignored, {str(phone["id"]): {"typeId": "PHONE", "value": ""}}) == [email]
    summary = ids_ignored.http.get(ids_ignored.portal.control_url + "/").json()
    assert summary["fm_ids"] == "ignored"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_file_upload_replaces_and_empty_deletes(b24: SandboxClient) -> None:
    first = update(b24, {CONTRACT: ["a.txt", b64("one")]})[CONTRACT]
    second = update(b24, {CONTRACT: ["b.txt", b64("two")]})[CONTRACT]
    assert second["id"] != first["id"]
    assert b24.http.get(b24.portal.base_url + second["url"]).content == b"two"
    assert b24.http.get(b24.portal.base_url + first["url"]).status_code == 404
    assert update(b24, {CONTRACT: ""})[CONTRACT] is None
    assert b24.http.get(b24.portal.base_url + second["url"]).status_code == 404


def test_file_kept_by_its_id_and_deleted_by_another_id(b24: SandboxClient) -> None:
    current = update(b24, {CONTRACT: ["a.txt", b64("one")]})[CONTRACT]
    assert update(b24, {CONTRACT: {"id": current["id"]}})[CONTRACT] == current
    assert update(b24, {CONTRACT: {"id": current["id"] + 100}})[CONTRACT] is None


def test_multiple_file_field_deletes_files_left_out(b24: SandboxClient) -> None:
    files = update(
        b24, {ATTACHMENTS: [["1.txt", b64("1")], ["2.txt", b64("2")], ["3.txt", b64("3")]]}
    )
    ids = [f["id"] for f in files[ATTACHMENTS]]
    kept = update(b24, {ATTACHMENTS: [{"id": ids[0]}, {"id": ids[2]}, ["4.txt", b64("4")]]})
    new_ids = [f["id"] for f in kept[ATTACHMENTS]]
    assert new_ids[:2] == [ids[0], ids[2]]
    assert len(new_ids) == 3
    assert b24.http.get(f"{b24.portal.control_url}/files/{ids[1]}").status_code == 404


def test_file_upload_over_form_encoding(b24: SandboxClient) -> None:
    item = update(b24, {CONTRACT: ["f.txt", b64("form")]}, form=True)
    assert b24.http.get(b24.portal.base_url + item[CONTRACT]["url"]).content == b"form"


def test_stage_outside_the_pipeline_is_silently_reverted(b24: SandboxClient) -> None:
    item = update(b24, {"stageId": "C9:UC_NYL06U", "title": "moved?"})
    assert (item["stageId"], item["categoryId"], item["title"]) == ("NEW", 0, "moved?")
    assert update(b24, {"stageId": "NO_SUCH_STAGE"})["stageId"] == "NEW"


def test_stage_of_another_pipeline_applies_with_its_category(b24: SandboxClient) -> None:
    item = update(b24, {"stageId": "C9:UC_NYL06U", "categoryId": 9})
    assert (item["stageId"], item["categoryId"]) == ("C9:UC_NYL06U", 9)
    item = update(b24, {"categoryId": 0})
    assert (item["stageId"], item["categoryId"]) == ("NEW", 0)


def test_stage_within_the_pipeline_moves(b24: SandboxClient) -> None:
    item = update(b24, {"stageId": "WON"})
    assert (item["stageId"], item["stageSemanticId"]) == ("WON", "S")


def test_no_change_means_no_save(b24: SandboxClient, shared_clock: ManualClock) -> None:
    shared_clock.advance(61)
    first = update(b24, {"title": "same", "opportunity": 10})
    shared_clock.advance(61)
    again = update(b24, {"title": "same", "opportunity": 10.0, "opened": first["opened"]})
    assert again["updatedTime"] == first["updatedTime"]
    counters = b24.counters()
    assert (counters["saves"], counters["unchanged_updates"]) == (1, 1)
    shared_clock.advance(61)
    changed = update(b24, {"title": "different"})
    assert changed["updatedTime"] > first["updatedTime"]
