"""Batch commands as PHP query strings, and which params can travel in one unchanged.

A ``batch`` command is ``method?query`` where the query is read by PHP's
``parse_str``. That reading cannot carry everything a JSON call can: ``null``,
empty arrays, booleans and keys with brackets have no spelling; top-level
names lose dots and spaces; every scalar arrives as a string (so a float goes
only when its text is the same however the server prints it); and the batch
engine rewrites any value in which ``$result``, ``$next``, ``$total``,
``$time`` or ``$error`` is followed by a non-space character. ``batch_blocker``
names the first such problem; params it accepts reach the method as a single
JSON call would deliver them, numbers arriving as their text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import quote

__all__ = ["batch_blocker", "php_query", "php_scalar"]

_REWRITTEN = re.compile(r"\$(?:result|next|total|time|error)\S", re.IGNORECASE)
# PHP's parse_str turns dots and spaces in a top-level name into underscores
# and cuts a name at NUL; the same NUL cut applies inside brackets.
_TOP_KEY_BANNED = frozenset("[]. \x00")
_KEY_BANNED = frozenset("[]\x00")
# PHP's defaults: max_input_nesting_level and max_input_vars (parse_str obeys both;
# what lies beyond is dropped without an error).
_MAX_DEPTH = 64
_MAX_VARS = 1000
_INT64 = 2**63
# A JSON float reaches a field as the server turns it into text, and that text
# is not the same everywhere: PHP prints 5.0 as "5" and keeps `precision` = 14
# significant digits, switching to exponent form from 1e14 (and below 1e-4,
# where Python's repr does too); other servers print 5.0 as "5.0". Only
# fractional floats that every reading spells alike go in a batch.
_FLOAT_DIGITS = 14
_FLOAT_MAX = 1e14


def _float_text(value: float) -> str | None:
    """The float's text, when every server turns the JSON float into that same text."""
    if not math.isfinite(value) or value.is_integer() or abs(value) >= _FLOAT_MAX:
        return None
    text = repr(value)
    if "e" in text:
        return None
    digits = text.lstrip("-").replace(".", "").lstrip("0")
    if len(digits) > _FLOAT_DIGITS:
        return None
    return text


def php_scalar(value: Any) -> str | None:
    """A leaf as the query string spells it, or None when it has no faithful spelling."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if -_INT64 <= value < _INT64 else None
    if isinstance(value, float):
        return _float_text(value)
    return None


def _path(top: str, keys: Sequence[str]) -> str:
    return top + "".join(f"[{k}]" for k in keys)


def _children(value: Mapping[Any, Any] | Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    if type(value) is dict or isinstance(value, Mapping):
        return iter(value.items())
    return enumerate(value)


_PLAIN = (dict, list, tuple, str, int)


def _is_branch(value: Any) -> bool:
    kind = type(value)
    if kind in _PLAIN:  # the common types, without an ABC check
        return kind is not str and kind is not int
    return isinstance(value, Mapping | list | tuple)


def _problem(top: str, keys: list[str], value: Any, count: list[int]) -> str | None:
    # The path is spelt only when there is a problem to name: this runs for
    # every value of every command on the way to a batch.
    if _is_branch(value):
        if len(keys) + 1 > _MAX_DEPTH:
            return f"{_path(top, keys)}: nested deeper than PHP reads ({_MAX_DEPTH} levels)"
        if not value:
            return f"{_path(top, keys)}: an empty array has no query-string spelling"
        for key, child in _children(value):
            if isinstance(key, bool) or not isinstance(key, str | int):
                return f"{_path(top, keys)}: a key of type {type(key).__name__}"
            text = key if type(key) is str else str(key)
            if not text or _KEY_BANNED.intersection(text):
                return f"{_path(top, keys)}: the key {text!r} would be read as nesting or cut"
            keys.append(text)
            reason = _problem(top, keys, child, count)
            keys.pop()
            if reason:
                return reason
        return None
    count[0] += 1
    if count[0] > _MAX_VARS:
        return f"more than {_MAX_VARS} values (PHP's max_input_vars)"
    if value is None:
        return f"{_path(top, keys)}: null has no query-string spelling"
    if isinstance(value, bool):
        return f"{_path(top, keys)}: a boolean has no query-string spelling"
    if isinstance(value, str):
        if _REWRITTEN.search(value):
            where = _path(top, keys)
            return f"{where}: the batch engine would rewrite this value ($result, $next, ...)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{_path(top, keys)}: text that is not valid Unicode"
        return None
    if php_scalar(value) is None:
        kind = type(value).__name__
        return f"{_path(top, keys)}: this {kind} may not arrive as the same text a JSON call gives"
    return None


def batch_blocker(params: Mapping[str, Any]) -> str | None:
    """Why these params cannot go inside a batch unchanged, or None when they can.

    The reason names the parameter's path (``fields[title]``), never its value.
    """
    count = [0]
    for key, value in params.items():
        if not isinstance(key, str) or not key or _TOP_KEY_BANNED.intersection(key):
            return f"the parameter name {key!r} does not survive PHP's parse_str"
        reason = _problem(key, [], value, count)
        if reason:
            return reason
    return None


def _pairs(path: str, value: Any) -> Iterator[tuple[str, str]]:
    if _is_branch(value):
        for key, child in _children(value):
            yield from _pairs(f"{path}[{key}]", child)
        return
    text = php_scalar(value)
    if text is None:  # pragma: no cover - batch_blocker rejected it first
        raise ValueError(f"{path}: no query-string spelling")
    yield path, text


@lru_cache(maxsize=4096)
def _quote_path(path: str) -> str:
    """Paths repeat from command to command (fields[title]); quote each once."""
    return quote(path, safe="[]")


def php_query(params: Mapping[str, Any]) -> str:
    """``fields[title]=x&fields[observers][0]=1``, percent-encoded, as PHP's parse_str reads it.

    Raises ValueError (naming the path, not the value) for params that
    ``batch_blocker`` rejects.
    """
    reason = batch_blocker(params)
    if reason:
        raise ValueError(reason)
    return "&".join(
        f"{_quote_path(path)}={quote(text, safe='')}"
        for key, value in params.items()
        for path, text in _pairs(key, value)
    )
