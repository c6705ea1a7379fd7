"""parse_command: what a producer's message must look like, and what it is told
when it does not."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from schemas import CommandValidationError, parse_command
from schemas.command import DealUpdate, SmartProcessUpdate

WEBHOOK_EXAMPLE: dict[str, Any] = {
    "entityTypeId": 2,
    "id": 351,
    "fields": {
        "title": "REST Deal #1",
        "stageId": "C9:UC_NYL06U",
        "assignedById": 6,
        "observers": [1, 2, 3],
        "opened": "N",
        "typeId": "SERVICE",
        "opportunity": 10000,
        "currencyId": "USD",
        "additionalInfo": "Updating deal via REST",
        "isManualOpportunity": "N",
        "utmSource": "google",
        "ufCrm_1721244707107": 200.05,
        "parentId1220": 2,
    },
}


def command(entity_type_id: int = 2, item_id: int = 351, **fields: Any) -> dict[str, Any]:
    return {"entityTypeId": entity_type_id, "id": item_id, "fields": fields}


def reason_for(body: Any) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(CommandValidationError) as caught:
        parse_command(raw)
    return caught.value.reason


def test_reference_webhook_example_is_sent_unchanged() -> None:
    parsed = parse_command(json.dumps(WEBHOOK_EXAMPLE).encode())
    assert isinstance(parsed, DealUpdate)
    assert parsed.to_params() == {**WEBHOOK_EXAMPLE, "useOriginalUfNames": "N"}
    assert parsed.ignored_fields == ()
    assert parsed.is_idempotent


def test_bytes_str_and_dict_give_the_same_command() -> None:
    raw = json.dumps(WEBHOOK_EXAMPLE)
    assert parse_command(raw) == parse_command(raw.encode()) == parse_command(WEBHOOK_EXAMPLE)


@pytest.mark.parametrize(
    ("entity_type_id", "kind"),
    [
        (1, "LeadUpdate"),
        (2, "DealUpdate"),
        (3, "ContactUpdate"),
        (4, "CompanyUpdate"),
        (7, "QuoteUpdate"),
        (31, "SmartInvoiceUpdate"),
        (128, "SmartProcessUpdate"),
        (192, "SmartProcessUpdate"),
        (1030, "SmartProcessUpdate"),
        (1032, "SmartProcessUpdate"),
    ],
)
def test_each_entity_type_gets_its_model(entity_type_id: int, kind: str) -> None:
    assert type(parse_command(command(entity_type_id, title_or_name="x"))).__name__ == kind


@pytest.mark.parametrize("entity_type_id", [0, 5, 6, 8, 30, 127, 193, 1029, 1031, -2])
def test_unknown_entity_types_are_refused(entity_type_id: int) -> None:
    reason = reason_for(command(entity_type_id))
    assert reason.startswith("entityTypeId: expected 1 (lead)")
    assert f"(given {entity_type_id})" in reason


@pytest.mark.parametrize("item_id", [0, -1, 2**31, 10**30, "351", 351.5, True, None])
def test_id_must_be_a_positive_integer_below_2_31(item_id: Any) -> None:
    assert reason_for({"entityTypeId": 2, "id": item_id, "fields": {}}).startswith("id: ")


def test_largest_item_id_is_accepted() -> None:
    assert parse_command(command(item_id=2**31 - 1)).id == 2**31 - 1


@pytest.mark.parametrize("key", ["auth", "webhook", "portal", "ID", "Fields"])
def test_other_top_level_keys_are_refused_by_name(key: str) -> None:
    body = {**command(title="x"), key: "0123456789abcdef-secret"}
    reason = reason_for(body)
    assert reason.startswith(f"{key}: unexpected key")
    assert "0123456789abcdef-secret" not in reason  # a credential is never echoed


@pytest.mark.parametrize("missing", ["entityTypeId", "id", "fields"])
def test_required_parameters(missing: str) -> None:
    body = command(title="x")
    del body[missing]
    assert reason_for(body) == f"{missing}: is required"


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("Y", "Y"),
        ("N", "N"),
        ("y", "Y"),
        ("n", "N"),
        (True, "Y"),
        (False, "N"),
        ("true", "Y"),
        ("false", "N"),
    ],
)
def test_booleans_are_sent_as_y_or_n(given: Any, sent: str) -> None:
    assert parse_command(command(opened=given)).fields_to_send() == {"opened": sent}


@pytest.mark.parametrize("given", [1, 0, "1", "0", "yes", "no", "", None, "TRUE", [], 1.0])
def test_booleans_the_portal_would_store_as_no_are_refused(given: Any) -> None:
    reason = reason_for(command(opened=given))
    assert reason.startswith('fields.opened: expected "Y" or "N"')


def test_use_original_uf_names_is_y_or_n() -> None:
    body = {**command(UF_CRM_1=1), "useOriginalUfNames": True}
    assert parse_command(body).to_params()["useOriginalUfNames"] == "Y"
    assert reason_for({**command(), "useOriginalUfNames": 1}).startswith("useOriginalUfNames:")


@pytest.mark.parametrize("given", ["2024-07-23", "2024-02-29", "", None])
def test_dates_that_parse_are_sent(given: Any) -> None:
    assert parse_command(command(closedate=given)).fields_to_send() == {"closedate": given}


@pytest.mark.parametrize(
    "given",
    ["2023-02-29", "23.07.2024", "2024-7-3", "2024-07-23T10:00:00+02:00", "tomorrow", 20240723],
)
def test_dates_the_portal_would_drop_are_refused(given: Any) -> None:
    assert reason_for(command(closedate=given)).startswith("fields.closedate: expected a date")


@pytest.mark.parametrize("given", [[], [1, 2], ["3"], None])
def test_multiple_fields_take_arrays(given: Any) -> None:
    sent = parse_command(command(observers=given)).fields_to_send()["observers"]
    assert sent == (None if given is None else [int(v) for v in given])


@pytest.mark.parametrize("given", [1, "1", "", {"a": 1}])
def test_scalars_for_multiple_fields_are_refused(given: Any) -> None:
    assert reason_for(command(observers=given)).startswith("fields.observers: expected an array")


@pytest.mark.parametrize("given", [-1, 2**31, 1.5, "abc", True, [1]])
def test_ids_are_non_negative_integers(given: Any) -> None:
    assert reason_for(command(assignedById=given)).startswith("fields.assignedById: expected an id")


@pytest.mark.parametrize("given", [10000, 10.5, "10.50", "", None, 0])
def test_numbers(given: Any) -> None:
    assert parse_command(command(opportunity=given)).fields_to_send() == {"opportunity": given}


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"true", b'"ten"'])
def test_numbers_that_are_not_finite_numbers_are_refused(raw: bytes) -> None:
    body = b'{"entityTypeId":2,"id":1,"fields":{"opportunity":' + raw + b"}}"
    assert reason_for(body).startswith("fields.opportunity:")


@pytest.mark.parametrize("given", [5, 1.5, True, ["a"], {"a": 1}])
def test_strings_are_strings(given: Any) -> None:
    assert reason_for(command(title=given)).startswith("fields.title:")


def test_fields_the_reference_does_not_list_are_ignored_and_reported() -> None:
    parsed = parse_command(command(title="x", Title="y", comment="z", birthdate="2020-01-01"))
    assert parsed.fields_to_send() == {"title": "x"}
    assert set(parsed.ignored_fields) == {
        "Title",
        "comment",
        "birthdate",
    }  # deals have no birthdate


def test_custom_fields_spelt_for_the_mode_are_sent_as_given() -> None:
    camel = parse_command(command(ufCrm_1721244707107=200.05, ufCrm2_1639669411830=[1, "a"]))
    assert camel.fields_to_send() == {
        "ufCrm_1721244707107": 200.05,
        "ufCrm2_1639669411830": [1, "a"],
    }
    original = parse_command({**command(UF_CRM_2_1639669411830="x"), "useOriginalUfNames": "Y"})
    assert original.fields_to_send() == {"UF_CRM_2_1639669411830": "x"}


@pytest.mark.parametrize(
    ("name", "mode", "other_mode"),
    [
        ("UF_CRM_1721244707107", "N", True),
        ("ufCrm_1721244707107", "Y", True),
        ("ufcrm_1721244707107", "N", False),
        ("UfCrm_1", "N", False),
        ("uf_crm_1", "N", False),
        ("UF_CRM_1", "N", True),
        ("Uf_Crm_1", "Y", False),
    ],
)
def test_custom_field_names_misspelt_for_the_mode_are_refused(
    name: str, mode: str, other_mode: bool
) -> None:
    reason = reason_for({**command(**{name: 1}), "useOriginalUfNames": mode})
    assert reason.startswith(f"fields.{name}: a custom field name must be spelt")
    assert ("spelt for the other useOriginalUfNames mode" in reason) is other_mode


@pytest.mark.parametrize("raw", [b"NaN", b"1e400", b"123456789012345678901234567890"])
def test_custom_field_values_must_be_json_the_portal_can_read(raw: bytes) -> None:
    body = b'{"entityTypeId":2,"id":1,"fields":{"ufCrm_1":[' + raw + b"]}}"
    assert reason_for(body).startswith("fields.ufCrm_1:")


def test_parent_links_are_ids() -> None:
    assert parse_command(command(parentId1220="2")).fields_to_send() == {"parentId1220": 2}
    assert reason_for(command(parentId1220="two")).startswith("fields.parentId1220: expected an id")
    assert parse_command(command(parentId0=1)).ignored_fields == ("parentId0",)


def test_fm_object_form_update_add_and_delete() -> None:
    fm = {
        "15": {"valueType": "WORK", "value": "+19999999999", "typeId": "PHONE"},
        "16": {"value": "", "typeId": "EMAIL"},
        "n0": {"valueType": "HOME", "value": "a@b.c", "typeId": "EMAIL"},
    }
    parsed = parse_command(command(3, fm=fm))
    assert parsed.fields_to_send() == {"fm": fm}
    assert not parsed.is_idempotent  # n0 adds an entry


def test_fm_list_form_and_idempotency() -> None:
    adds = [{"typeId": "PHONE", "valueType": "WORK", "value": "+1"}]
    assert not parse_command(command(1, fm=adds)).is_idempotent


PHONE_15 = {"typeId": "PHONE", "valueType": "WORK", "value": "+1"}
DELETE_15 = {"typeId": "PHONE", "value": ""}


@pytest.mark.parametrize(
    ("fm", "idempotent"),
    [
        # an entry id with a value: a portal may ignore the id and add the value again
        ({"15": PHONE_15}, False),
        ([{"id": 15, **PHONE_15}], False),
        ({"n0": PHONE_15}, False),
        ([PHONE_15], False),
        # deletions alone: repeating one deletes nothing more
        ({"15": DELETE_15}, True),
        ([{"id": 15, **DELETE_15}], True),
        ({"15": DELETE_15, "16": {"typeId": "EMAIL", "value": ""}}, True),
        ({"15": DELETE_15, "16": {**PHONE_15, "typeId": "EMAIL"}}, False),
        ({}, True),
        (None, True),
    ],
)
def test_fm_is_idempotent_only_when_it_deletes(fm: Any, idempotent: bool) -> None:
    assert parse_command(command(3, fm=fm)).is_idempotent is idempotent


@pytest.mark.parametrize(
    ("fm", "where"),
    [
        ({"x1": {"typeId": "PHONE", "valueType": "WORK", "value": "1"}}, "fields.fm: fm keys"),
        ({"n0": {"valueType": "WORK", "value": "1"}}, "fields.fm.n0.typeId: is required"),
        ({"n0": {"typeId": "FAX", "valueType": "WORK", "value": "1"}}, "fields.fm.n0.typeId"),
        ({"n0": {"typeId": "PHONE", "value": "1"}}, "fields.fm.n0: an fm entry with a value"),
        ({"n0": {"typeId": "PHONE", "valueType": "WORK", "value": 1}}, "fields.fm.n0.value"),
        ([{"typeId": "PHONE", "valueType": "WORK", "value": "1", "x": 1}], "fields.fm.0.x"),
        ("+1999", "fields.fm: expected fm as an object"),
    ],
)
def test_fm_mistakes_are_refused(fm: Any, where: str) -> None:
    assert reason_for(command(3, fm=fm)).startswith(where)


def test_fm_is_not_a_deal_field() -> None:
    fm = {"n0": {"typeId": "PHONE", "valueType": "WORK", "value": "1"}}
    assert parse_command(command(2, fm=fm)).ignored_fields == ("fm",)


@pytest.mark.parametrize("value", [["photo.png", "aGVsbG8="], {"id": 433}, "", None])
def test_file_values(value: Any) -> None:
    parsed = parse_command(command(3, photo=value))
    assert parsed.fields_to_send() == {"photo": value}
    assert parsed.is_idempotent is not isinstance(value, list)  # an upload is not idempotent


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["photo.png", "not base64!"], "is not valid base64"),
        (["photo.png", "aGVsbG8"], "is not valid base64"),
        (["", "aGVsbG8="], "expected a file name"),
        (["photo.png"], "expected a file value"),
        ({"id": "x"}, "expected an id"),
        ({"id": 1, "name": "x"}, "expected a file value"),
        (433, "expected a file value"),
    ],
)
def test_bad_file_values_are_refused(value: Any, message: str) -> None:
    reason = reason_for(command(3, photo=value))
    assert reason.startswith("fields.photo: ")
    assert message in reason


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b"42",
        b'"text"',
        b"{",
        b'{"entityTypeId":2,"id":1,"fields":[]}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_bodies_that_are_not_commands(raw: bytes) -> None:
    assert reason_for(raw)


def test_reason_is_one_line_and_counts_the_other_problems() -> None:
    reason = reason_for(command(opened=1, observers=2, closedate="x"))
    assert "\n" not in reason
    assert reason.endswith("(and 2 more)")


def test_smart_process_fields() -> None:
    parsed = parse_command(command(1032, categoryId=5, stageId="DT1032_5:NEW", ufCrm5_170="v"))
    assert isinstance(parsed, SmartProcessUpdate)
    assert parsed.fields_to_send() == {
        "categoryId": 5,
        "stageId": "DT1032_5:NEW",
        "ufCrm5_170": "v",
    }


@pytest.mark.parametrize(
    "fields",
    [{"ufCrm_1\n": 1}, {"closedate": "2024-07-23\n"}, {"opportunity": "10.5\n"}],
)
def test_a_trailing_newline_is_refused(fields: dict[str, Any]) -> None:
    name = next(iter(fields))
    assert reason_for(command(**fields)).startswith(f"fields.{name}")


def test_a_model_is_built_at_its_first_use_and_validates_as_before() -> None:
    # In a fresh interpreter: importing the contract builds no entity type's model,
    # a deal builds the deal's alone, and a command the fast path cannot place
    # (here a bad entity type) builds the union that reports it.
    script = """
import json
from schemas import CommandValidationError, parse_command
from schemas.command import _BY_KIND, _adapter
from schemas.entities import FIELDS_BY_KIND
models = [*_BY_KIND.values(), *FIELDS_BY_KIND.values()]
built = lambda: sorted(m.__name__ for m in models if m.__pydantic_complete__)
seen = [built()]
command = parse_command(b'{"entityTypeId": 2, "id": 7, "fields": {"title": "x"}}')
seen.append(built())
try:
    parse_command(b'{"entityTypeId": 5, "id": 7, "fields": {}}')
except CommandValidationError as exc:
    reason = exc.reason
print(json.dumps([seen, type(command).__name__, reason, _adapter.cache_info().currsize]))
"""
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    seen, kind, reason, unions = json.loads(printed)
    assert seen == [[], ["DealUpdate"]]
    assert kind == "DealUpdate"
    assert reason.startswith("entityTypeId: expected")
    assert unions == 1
