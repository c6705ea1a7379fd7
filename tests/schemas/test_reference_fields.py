"""The models carry every field the crm.item.update reference lists, no more."""

from __future__ import annotations

import typing

import pytest

from schemas.entities import FIELDS_BY_KIND
from schemas.entities.reference import REFERENCE_FIELDS
from schemas.multifield import Multifield
from schemas.values import Date, FileValue, Id, Ids, Number, Text, YesNo
from scripts.gen_reference_fields import (
    FIELDS,
    OUTPUT,
    parse_fields,
    parse_reference,
    render,
    render_fields,
)

# The value type each reference type maps to.
EXPECTED_TYPE = {
    "string": Text,
    "text": Text,
    "crm_status": Text,
    "crm_currency": Text,
    "location": Text,
    "integer": Id,
    "user": Id,
    "crm_company": Id,
    "crm_contact": Id,
    "crm_lead": Id,
    "crm_deal": Id,
    "crm_quote": Id,
    "crm_category": Id,
    "double": Number,
    "boolean": YesNo,
    "date": Date,
    "file": FileValue,
}
FAMILIES = {"ufCrm...", "parentId..."}


def _listed(kind: str) -> dict[str, tuple[str, bool]]:
    return {
        name: (type_, multiple)
        for name, type_, multiple in REFERENCE_FIELDS[kind]
        if name not in FAMILIES
    }


def test_every_entity_type_of_the_reference_has_a_model() -> None:
    assert set(REFERENCE_FIELDS) == set(FIELDS_BY_KIND)


@pytest.mark.parametrize("kind", sorted(REFERENCE_FIELDS))
def test_model_has_exactly_the_reference_fields(kind: str) -> None:
    model = FIELDS_BY_KIND[kind]  # type: ignore[index]
    listed = _listed(kind)
    missing = set(listed) - set(model.model_fields)
    extra = set(model.model_fields) - set(listed)
    assert not missing, f"{model.__name__} lacks {sorted(missing)}"
    assert not extra, f"{model.__name__} has fields the reference does not list: {sorted(extra)}"


@pytest.mark.parametrize("kind", sorted(REFERENCE_FIELDS))
def test_model_field_types_follow_the_reference(kind: str) -> None:
    model = FIELDS_BY_KIND[kind]  # type: ignore[index]
    hints = typing.get_type_hints(model, include_extras=True)
    for name, (type_, multiple) in _listed(kind).items():
        if type_ == "multifield":
            expected = Multifield
        elif multiple:
            expected = Ids
        else:
            expected = EXPECTED_TYPE[type_]
        assert hints[name] == expected, f"{model.__name__}.{name} ({type_}, multiple={multiple})"


def test_reference_families_are_listed_for_every_type() -> None:
    for kind, rows in REFERENCE_FIELDS.items():
        names = {name for name, _, _ in rows}
        assert names >= FAMILIES, kind


def test_array_described_fields_are_multiple() -> None:
    """Where type and description disagree, the description wins."""
    contact = {name: multiple for name, _, multiple in REFERENCE_FIELDS["contact"]}
    quote = {name: multiple for name, _, multiple in REFERENCE_FIELDS["quote"]}
    assert contact["companyIds"] is True
    assert quote["storageElementIds"] is True


def test_committed_table_is_generated_from_the_committed_fields() -> None:
    generated = render(parse_fields(FIELDS.read_text(encoding="utf-8")))
    assert generated == OUTPUT.read_text(encoding="utf-8"), "run scripts/gen_reference_fields.py"


def test_the_fields_file_keeps_what_the_page_says() -> None:
    """What `extract` writes from a page reads back as the page's own fields."""
    page = """CRM object identifier entityTypeId: 3
title
string
Title
companyIds
crm_company
Array of identifiers of companies
How to Update a Custom Field
ignored
string
"""
    fields = parse_reference(page)
    assert parse_fields(render_fields(fields)) == fields
    assert [(f.name, f.multiple) for f in fields["contact"]] == [
        ("title", False),
        ("companyIds", True),
    ]


def test_parser_reads_name_and_type_on_one_line() -> None:
    text = """CRM object identifier entityTypeId: 2
Name
type
Description
title
string
Item title
utmCampaign string
Identifier of the advertising campaign
companyIds
crm_company
Array of identifiers of companies
"""
    fields = parse_reference(text)["deal"]
    assert [(f.name, f.type, f.multiple) for f in fields] == [
        ("title", "string", False),
        ("utmCampaign", "string", False),
        ("companyIds", "crm_company", True),
    ]
