"""PHP-style query strings: decoding as PHP does, and encoding as http_build_query does."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sandbox.phpquery import decode, encode, listify


def test_nested_keys_become_dicts() -> None:
    assert decode("fields[title]=x&fields[opened]=Y") == {"fields": {"title": "x", "opened": "Y"}}


def test_empty_brackets_and_indexes_both_make_lists() -> None:
    assert decode("a[]=1&a[]=2") == {"a": ["1", "2"]}
    assert decode("a[0]=1&a[1]=2") == {"a": ["1", "2"]}
    assert decode("fields[observers][0]=1") == {"fields": {"observers": ["1"]}}


def test_non_sequential_indexes_stay_a_mapping() -> None:
    assert decode("fm[15][value]=x&fm[16][value]=y") == {
        "fm": {"15": {"value": "x"}, "16": {"value": "y"}}
    }


def test_percent_and_plus_decoding() -> None:
    assert decode("t=a+b%26c%3D&x%5By%5D=1") == {"t": "a b&c=", "x": {"y": "1"}}


def test_last_plain_value_wins_and_empty_pairs_are_skipped() -> None:
    assert decode("a=1&&a=2&=3") == {"a": "2"}


def test_php_name_mangling_of_dots_and_unclosed_brackets() -> None:
    assert decode("a.b=1&c[d=2") == {"a_b": "1", "c_d": "2"}


def test_encode_as_http_build_query() -> None:
    encoded = encode({"id": 1, "fields": {"title": "a b", "observers": [1, 2], "ok": True}})
    assert encoded == (
        "id=1&fields[title]=a%20b&fields[observers][0]=1&fields[observers][1]=2&fields[ok]=1"
    )
    assert encode({"a": None, "b": [], "c": False}) == "c=0"


def test_listify_only_sequential_keys() -> None:
    assert listify({"0": "a", "1": {"0": "b"}}) == ["a", ["b"]]
    assert listify({"1": "a"}) == {"1": "a"}


_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8)
_leaf: st.SearchStrategy[Any] = _text
_tree = st.recursive(
    _leaf,
    lambda children: st.dictionaries(
        st.text(alphabet="abcxyz_", min_size=1, max_size=5), children, min_size=1, max_size=3
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.text(alphabet="abcdef", min_size=1, max_size=5), _tree, max_size=4))
def test_decode_inverts_encode_for_string_trees(params: dict[str, Any]) -> None:
    assert decode(encode(params)) == params
