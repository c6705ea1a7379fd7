"""$result references inside batch commands."""

from __future__ import annotations

from sandbox.references import resolve_references

MAPS = {
    "result": {"a": {"item": {"id": 5, "observers": [1, 2]}}, "0": [7]},
    "next": {"l": 50},
    "total": {},
    "time": {},
    "error": {},
}


def test_whole_value_reference_keeps_the_type() -> None:
    assert resolve_references({"id": "$result[a][item][id]"}, MAPS) == {"id": 5}
    assert resolve_references(["$result[a][item][observers]"], MAPS) == [[1, 2]]


def test_reference_inside_text_becomes_text() -> None:
    assert resolve_references("id=$result[a][item][id]!", MAPS) == "id=5!"
    assert resolve_references("from $NEXT[l]", MAPS) == "from 50"


def test_unresolved_reference_becomes_empty() -> None:
    assert resolve_references("pay $result[x] now", MAPS) == "pay  now"
    assert resolve_references("$error[nope]", MAPS) == ""


def test_dollar_word_followed_by_space_or_end_is_kept() -> None:
    assert resolve_references("costs $result here", MAPS) == "costs $result here"
    assert resolve_references("ends with $time", MAPS) == "ends with $time"
    assert resolve_references("$5 and $other[x]", MAPS) == "$5 and $other[x]"


def test_nested_params_are_walked() -> None:
    params = {"fields": {"title": "$result[a][item][id]", "n": 3}}
    assert resolve_references(params, MAPS) == {"fields": {"title": 5, "n": 3}}
