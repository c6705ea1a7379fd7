"""Batch query strings: what PHP reads back, and what batch_blocker keeps out of a batch."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.phpquery import decode as sandbox_decode
from sandbox.references import resolve_references
from tests.worker.bitrix.php import as_php, parse_str
from worker.bitrix.encoding import batch_blocker, php_query, php_scalar


def test_php_query_spells_nesting_with_brackets_and_percent_encodes_text() -> None:
    query = php_query(
        {
            "entityTypeId": 2,
            "id": 351,
            "fields": {"title": "a b&c=d+é", "observers": [1, 2], "opportunity": 12.5},
        }
    )
    assert query == (
        "entityTypeId=2&id=351&fields[title]=a%20b%26c%3Dd%2B%C3%A9"
        "&fields[observers][0]=1&fields[observers][1]=2&fields[opportunity]=12.5"
    )


def test_a_fractional_float_is_spelt_as_php_prints_it() -> None:
    assert php_scalar(-0.25) == "-0.25"
    assert php_scalar(0.0001) == "0.0001"
    assert php_scalar(12345678901.125) == "12345678901.125"


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"fields": {"comments": "pay $result[x] now"}}, "fields[comments]"),
        ({"fields": {"comments": "$RESULT[x]"}}, "fields[comments]"),
        ({"fields": {"c": ["ok", "$next[a]"]}}, "fields[c][1]"),
        ({"fields": {"c": "$total5"}}, "fields[c]"),
        ({"fields": {"c": "at $time:now"}}, "fields[c]"),
        ({"fields": {"c": "$Error!"}}, "fields[c]"),
        ({"fields": {"title": None}}, "fields[title]"),
        ({"fields": {"observers": []}}, "fields[observers]"),
        ({"fields": {"fm": {}}}, "fields[fm]"),
        ({"fields": {"a": {"b": [1, {}]}}}, "fields[a][b][1]"),
        ({"fields": {"opened": True}}, "fields[opened]"),
        ({"fields": {"opportunity": 0.1 + 0.2}}, "fields[opportunity]"),
        ({"fields": {"opportunity": 1e20}}, "fields[opportunity]"),
        ({"fields": {"opportunity": 1e-5}}, "fields[opportunity]"),
        ({"fields": {"opportunity": math.nan}}, "fields[opportunity]"),
        ({"fields": {"opportunity": 1000.0}}, "fields[opportunity]"),
        ({"fields": {"opportunity": -0.0}}, "fields[opportunity]"),
        ({"fields": {"big": 2**63}}, "fields[big]"),
        ({"fields": {"a[b]": "x"}}, "fields"),
        ({"fields": {"": "x"}}, "fields"),
        ({"fields": {"x": "\ud800"}}, "fields[x]"),
    ],
)
def test_batch_blocker_names_the_path_of_what_a_query_string_cannot_carry(
    params: dict[str, Any], path: str
) -> None:
    reason = batch_blocker(params)
    assert reason is not None
    assert reason.startswith(path)
    assert "$" not in reason.split(":", 1)[0]


@pytest.mark.parametrize("name", ["a.b", "a b", "a[0]", "", " a", "x]"])
def test_top_level_names_php_would_mangle_are_refused(name: str) -> None:
    assert batch_blocker({name: "1"}) is not None


def test_too_many_values_or_too_deep_nesting_are_refused() -> None:
    assert batch_blocker({"ids": list(range(1001))}) is not None
    assert batch_blocker({"ids": list(range(1000))}) is None
    deep: Any = "x"
    for _ in range(65):
        deep = {"k": deep}
    assert batch_blocker({"a": deep}) is not None


@pytest.mark.parametrize("text", ["$result", "costs $ 5", "$result x", "US$", "$resul[x]"])
def test_dollar_text_the_batch_engine_leaves_alone_may_go_in_a_batch(text: str) -> None:
    assert batch_blocker({"fields": {"comments": text}}) is None


def test_php_query_refuses_what_batch_blocker_refuses() -> None:
    with pytest.raises(ValueError, match=r"fields\[title\]"):
        php_query({"fields": {"title": None}})


_keys = st.text(min_size=1, max_size=8).filter(lambda k: not set(k) & set("[]\x00"))
_top_keys = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)
_leaves = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(10**11), max_value=10**11)
    .filter(lambda n: n % 1000 != 0)
    .map(lambda n: n / 1000),
)
_batchable_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4),
        st.dictionaries(_keys, inner, min_size=1, max_size=4),
    ),
    max_leaves=15,
)
_any_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=12),
        st.sampled_from(["$result[a][id]", "$next", "x $time[y]"]),
        st.integers(),
        st.floats(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
_MAPS = {"result": {"a": {"id": 7}}, "error": {}, "total": {}, "next": {}, "time": {}}


def _php_text(value: Any) -> str:
    text = php_scalar(value)
    assert text is not None
    return text


def _reads_back(params: dict[str, Any]) -> None:
    query = php_query(params)
    decoded = parse_str(query)
    assert decoded == as_php(params, _php_text)
    # the sandbox's reading agrees, and its batch engine leaves every value as it was
    assert as_php(sandbox_decode(query)) == decoded
    assert resolve_references(sandbox_decode(query), _MAPS) == sandbox_decode(query)


@given(st.dictionaries(_top_keys, _batchable_values, max_size=4))
def test_batchable_params_read_back_as_the_same_structure(params: dict[str, Any]) -> None:
    assert batch_blocker(params) is None
    _reads_back(params)


@given(st.dictionaries(st.text(max_size=6), _any_json, max_size=4))
def test_any_params_either_are_blocked_or_read_back_unchanged(params: dict[str, Any]) -> None:
    if batch_blocker(params) is None:
        _reads_back(params)
    else:
        with pytest.raises(ValueError, match=r"\w"):
            php_query(params)
