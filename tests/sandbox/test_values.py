"""Value coercion, one type at a time (the HTTP tests cover the same rules end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.errors import RestError
from sandbox.fields import FieldDef
from sandbox.values import DROP, coerce, parse_offset, php_type

TZ = parse_offset("+03:00")


def field(kind: str, multiple: bool = False) -> FieldDef:
    return FieldDef(name="f", type=kind, multiple=multiple)


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        ("boolean", True, "Y"),
        ("boolean", 1, "N"),
        ("boolean", "", "N"),
        ("integer", "12", 12),
        ("integer", 3.0, 3),
        ("double", "2.5", 2.5),
        ("string", 5, "5"),
        ("string", False, "0"),
        ("date", "2024-07-23T23:30:00+05:00", "2024-07-23T00:00:00+03:00"),
        ("date", "2024-13-01", DROP),
        ("datetime", "2024-07-23T10:00:00Z", "2024-07-23T13:00:00+03:00"),
        ("datetime", "2024-07-23", "2024-07-23T00:00:00+03:00"),
        ("datetime", "yesterday", DROP),
        ("user", None, None),
    ],
)
def test_single_values(kind: str, value: Any, stored: Any) -> None:
    assert coerce(field(kind), value, TZ) == stored


def test_multiple_values_take_php_arrays_and_skip_dropped_elements() -> None:
    assert coerce(field("date", True), {"0": "2024-01-01", "1": "bad"}, TZ) == [
        "2024-01-01T00:00:00+03:00"
    ]
    with pytest.raises(RestError) as caught:
        coerce(field("integer", True), 7, TZ)
    assert caught.value.code == "100"
    assert "got integer instead" in caught.value.description


def test_php_type_names() -> None:
    samples: list[Any] = [True, 1, 1.5, "s", None, []]
    assert [php_type(v) for v in samples] == [
        "boolean",
        "integer",
        "double",
        "string",
        "NULL",
        "array",
    ]
