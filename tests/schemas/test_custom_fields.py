"""Custom fields checked against definitions shaped like crm.item.fields' output."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import CommandValidationError, FieldDefinition, validate_custom_fields

DEFINITIONS = {
    name: FieldDefinition.model_validate(definition)
    for name, definition in {
        "ufCrm_1": {"type": "boolean", "upperName": "UF_CRM_1", "isMultiple": False},
        "ufCrm_2": {"type": "double", "upperName": "UF_CRM_2", "isMultiple": True},
        "ufCrm_3": {"type": "string", "upperName": "UF_CRM_3", "isReadOnly": True},
        "ufCrm_4": {"type": "date", "upperName": "UF_CRM_4"},
        "ufCrm_5": {"type": "file", "upperName": "UF_CRM_5", "isMultiple": True},
        "ufCrm_6": {"type": "some_new_type", "upperName": "UF_CRM_6"},
        "ufCrm_7": {"type": "enumeration", "upperName": "UF_CRM_7", "isMultiple": True},
        "ufCrm_8": {"type": "datetime", "upperName": "UF_CRM_8"},
        "title": {"type": "string", "isRequired": True, "title": "Name"},
        "createdTime": {"type": "datetime", "isReadOnly": True},
    }.items()
}


def check(fields: dict[str, Any], *, original: bool = False) -> dict[str, Any]:
    return validate_custom_fields(fields, DEFINITIONS, original_uf_names=original)


def reason(fields: dict[str, Any], *, original: bool = False) -> str:
    with pytest.raises(CommandValidationError) as caught:
        check(fields, original=original)
    return caught.value.reason


def test_values_are_normalised_by_their_portal_type() -> None:
    given = {
        "ufCrm_1": True,
        "ufCrm_2": [1, "2.5"],
        "ufCrm_4": "2024-07-23",
        "ufCrm_5": [{"id": 12}, ["new.pdf", "aGVsbG8="]],
        "ufCrm_6": {"anything": [1, "x"]},
        "ufCrm_7": ["3", 4],
        "ufCrm_8": "2024-07-23T18:19:21+02:00",
        "title": "x",
    }
    assert check(given) == {**given, "ufCrm_1": "Y", "ufCrm_7": [3, 4]}


def test_original_names_are_matched_by_upper_name() -> None:
    assert check({"UF_CRM_1": "n", "UF_CRM_2": []}, original=True) == {
        "UF_CRM_1": "N",
        "UF_CRM_2": [],
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"ufCrm_1": 1}, 'fields.ufCrm_1: expected "Y" or "N"'),
        ({"ufCrm_2": 2.5}, "fields.ufCrm_2: expected an array"),
        ({"ufCrm_2": [1, "x"]}, "fields.ufCrm_2.1: expected a finite number"),
        ({"ufCrm_3": "x"}, "fields.ufCrm_3: is read-only"),
        ({"createdTime": "2024-01-01T00:00:00+00:00"}, "fields.createdTime: is read-only"),
        ({"ufCrm_4": "23.07.2024"}, "fields.ufCrm_4: expected a date"),
        ({"ufCrm_5": [["a.pdf", "%%%"]]}, "fields.ufCrm_5.0: the content of file 'a.pdf'"),
        ({"ufCrm_6": [float("nan")]}, "fields.ufCrm_6: expected a finite number"),
        ({"ufCrm_8": "2024-07-23 18:19"}, "fields.ufCrm_8: expected a date-time"),
        ({"ufCrm_99": 1}, "fields.ufCrm_99: the portal has no such custom field"),
        ({"title": 5}, "fields.title: input should be a valid string"),
    ],
)
def test_problems_name_the_field(fields: dict[str, Any], expected: str) -> None:
    assert reason(fields).startswith(expected)


def test_every_problem_is_reported() -> None:
    with pytest.raises(CommandValidationError) as caught:
        check({"ufCrm_1": 1, "ufCrm_3": "x", "ufCrm_99": 1})
    assert [p.path for p in caught.value.problems] == [
        "fields.ufCrm_1",
        "fields.ufCrm_3",
        "fields.ufCrm_99",
    ]


def test_fields_without_definitions_that_are_not_custom_are_left_alone() -> None:
    assert check({"stageId": "NEW"}) == {"stageId": "NEW"}


def test_definitions_accept_crm_item_fields_output() -> None:
    definition = FieldDefinition.model_validate(
        {
            "type": "crm_status",
            "isRequired": False,
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": False,
            "isDynamic": False,
            "title": "Stage",
            "statusType": "DEAL_STAGE",
            "settings": {},
        }
    )
    assert definition.type == "crm_status"
    assert not definition.isReadOnly
