"""The JSON Schema a producer validates against says what parse_command says."""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CommandValidationError, parse_command
from tests.schemas.test_command import WEBHOOK_EXAMPLE


@functools.cache
def printed_validator() -> jsonschema.Draft202012Validator:
    """The schema exactly as `b24-worker schema` prints it."""
    printed = subprocess.run(
        [sys.executable, "-m", "worker", "schema"], capture_output=True, check=True, text=True
    ).stdout
    schema = json.loads(printed)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def validator() -> jsonschema.Draft202012Validator:
    return printed_validator()


def with_fields(**fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(WEBHOOK_EXAMPLE)
    body["fields"].update(fields)
    return body


def test_reference_webhook_example_validates(validator: jsonschema.Draft202012Validator) -> None:
    validator.validate(WEBHOOK_EXAMPLE)


@pytest.mark.parametrize(
    "body",
    [
        with_fields(opened=1),
        with_fields(opened="1"),
        with_fields(observers=1),
        with_fields(closedate="31.12.2024"),
        {**WEBHOOK_EXAMPLE, "auth": "token"},
        {**WEBHOOK_EXAMPLE, "id": 0},
        {**WEBHOOK_EXAMPLE, "entityTypeId": 5},
        {**WEBHOOK_EXAMPLE, "entityTypeId": 1031},
        {"entityTypeId": 2, "id": 1},
    ],
)
def test_schema_refuses_what_the_worker_refuses(
    validator: jsonschema.Draft202012Validator, body: dict[str, Any]
) -> None:
    assert not validator.is_valid(body)
    with pytest.raises(CommandValidationError):
        parse_command(body)


_simple_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**31 + 5),
    st.text(max_size=12),
    st.sampled_from(["Y", "N", "y", "true", "2024-07-23", "2024-13-01", "", "10.5"]),
    st.lists(st.integers(-1, 5), max_size=3),
)
_field_names = st.sampled_from(
    [
        "title",
        "opened",
        "observers",
        "closedate",
        "opportunity",
        "assignedById",
        "stageId",
        "isRecurring",
        "contactIds",
        "probability",
    ]
)


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(_field_names, _simple_values, max_size=4))
def test_schema_and_parser_agree_on_deal_fields(fields: dict[str, Any]) -> None:
    body = {"entityTypeId": 2, "id": 1, "fields": fields}
    try:
        parse_command(body)
        accepted = True
    except CommandValidationError:
        accepted = False
    assert printed_validator().is_valid(body) is accepted
