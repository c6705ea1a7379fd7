"""Properties over generated input: valid commands survive a round trip, and
arbitrary JSON only ever raises the validation error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CommandValidationError, UpdateCommand, parse_command

ids = st.integers(0, 2**31 - 1)
texts = st.text(max_size=30)
dates = st.dates().map(lambda d: d.isoformat())
deal_fields = st.fixed_dictionaries(
    {},
    optional={
        "title": texts | st.none(),
        "opened": st.sampled_from(["Y", "N", "y", "n", "true", "false", True, False]),
        "observers": st.lists(ids, max_size=4),
        "closedate": dates | st.just(""),
        "opportunity": st.integers(-(10**9), 10**9)
        | st.floats(allow_nan=False, allow_infinity=False),
        "assignedById": ids,
        "categoryId": ids | st.just(""),
        "comments": texts,
        "ufCrm_1721244707107": st.recursive(
            st.none() | st.booleans() | st.integers(-(2**40), 2**40) | texts,
            lambda inner: st.lists(inner, max_size=3),
            max_leaves=5,
        ),
        "parentId1220": ids,
        "notAField": texts,
    },
)
commands = st.builds(
    lambda type_id, item_id, fields: {"entityTypeId": type_id, "id": item_id, "fields": fields},
    st.just(2),
    st.integers(1, 2**31 - 1),
    deal_fields,
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


@settings(max_examples=400, deadline=None)
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
