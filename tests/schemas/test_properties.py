"""Properties over generated input: valid commands survive a round trip, and
arbitrary JSON only ever raises the validation error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CommandValidationError, UpdateCommand, parse_command
from schemas.entities.reference import REFERENCE_FIELDS

ids = st.integers(0, 2**31 - 1)
texts = st.text(max_size=30)
dates = st.dates().map(lambda d: d.isoformat())
custom_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | texts,
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)
fm_entries = st.fixed_dictionaries(
    {"typeId": st.sampled_from(["PHONE", "EMAIL", "WEB", "IM", "LINK"]), "value": texts},
    optional={"valueType": st.sampled_from(["WORK", "HOME", "MOBILE"])},
).filter(lambda entry: entry["value"] == "" or "valueType" in entry)

# Valid values for each reference type.
BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "string": texts | st.none(),
    "text": texts,
    "crm_status": texts,
    "crm_currency": st.sampled_from(["USD", "EUR", ""]),
    "location": texts,
    "integer": ids | st.just(""),
    "double": st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just("10.50"),
    "boolean": st.sampled_from(["Y", "N", "y", "n", "true", "false", True, False]),
    "date": dates | st.just(""),
    "file": st.just(["a.txt", "aGVsbG8="]) | st.builds(lambda n: {"id": n}, st.integers(1, 99)),
    "multifield": st.dictionaries(
        st.sampled_from(["n0", "n1", "15", "16"]), fm_entries, max_size=2
    ),
}
for _name in (
    "user",
    "crm_company",
    "crm_contact",
    "crm_lead",
    "crm_deal",
    "crm_quote",
    "crm_category",
):
    BY_TYPE[_name] = ids


def _fields_of(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, type_, multiple in REFERENCE_FIELDS[kind]:
        if name.endswith("..."):
            continue
        optional[name] = (
            BY_TYPE[type_] if type_ == "multifield" or not multiple else st.lists(ids, max_size=3)
        )
    optional["ufCrm_1721244707107"] = custom_values
    optional["parentId1220"] = ids
    optional["notAField"] = texts
    return st.fixed_dictionaries({}, optional=optional)


TYPE_IDS = {"lead": 1, "deal": 2, "contact": 3, "company": 4, "quote": 7, "smart_invoice": 31}
commands = st.sampled_from(sorted(REFERENCE_FIELDS)).flatmap(
    lambda kind: st.builds(
        lambda type_id, item_id, fields: {"entityTypeId": type_id, "id": item_id, "fields": fields},
        st.just(TYPE_IDS[kind]) if kind in TYPE_IDS else st.sampled_from([128, 192, 1030, 2048]),
        st.integers(1, 2**31 - 1),
        _fields_of(kind),
    )
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
near_commands = st.fixed_dictionaries(
    {},
    optional={
        "entityTypeId": st.sampled_from([1, 2, 3, 4, 7, 31, 128, 1032, 5, "2", None, True]),
        "id": st.integers(-5, 2**32) | json_values,
        "fields": st.dictionaries(
            st.sampled_from(
                [
                    "title",
                    "opened",
                    "fm",
                    "photo",
                    "observers",
                    "ufCrm_1",
                    "UF_CRM_1",
                    "parentId2",
                    "birthdate",
                    "companyIds",
                    "x",
                ]
            ),
            json_values,
            max_size=5,
        )
        | json_values,
        "useOriginalUfNames": json_values,
        "auth": json_values,
    },
)


def _outcome(raw: bytes) -> UpdateCommand | str:
    """The command, or the reason it was refused; any other exception escapes."""
    try:
        return parse_command(raw)
    except CommandValidationError as exc:
        return exc.reason


@settings(max_examples=700, deadline=None)
@given(body=commands)
def test_valid_commands_round_trip(body: dict[str, Any]) -> None:
    first = parse_command(json.dumps(body).encode())
    again = parse_command(json.dumps(first.to_params()).encode())
    assert again.to_params() == first.to_params()
    assert type(again) is type(first)
    assert set(first.ignored_fields) == ({"notAField"} & set(body["fields"]))


@settings(max_examples=500, deadline=None)
@given(body=near_commands | json_values)
def test_arbitrary_json_only_raises_the_validation_error(body: Any) -> None:
    try:
        raw = json.dumps(body).encode()
    except ValueError:
        return
    outcome = _outcome(raw)
    if isinstance(outcome, str):
        assert outcome
        assert "\n" not in outcome
    else:
        json.dumps(outcome.to_params(), allow_nan=False)  # what is accepted can be sent


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_the_validation_error(raw: bytes) -> None:
    outcome = _outcome(raw)
    assert not isinstance(outcome, str) or outcome
