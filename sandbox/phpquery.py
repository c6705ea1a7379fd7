"""PHP-style query strings, both ways, as the portal's PHP front end reads them.

``fields[title]=x&fields[observers][0]=1`` decodes to
``{"fields": {"title": "x", "observers": ["1"]}}``. PHP has one array type, so
a decoded mapping whose keys are exactly ``"0".."n-1"`` becomes a list (that is
what ``a[]=1&a[]=2`` and ``a[0]=1&a[1]=2`` both mean, and what PHP's
``json_encode`` would print). Every scalar arrives as a string.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote_plus

__all__ = ["decode", "encode", "listify"]


def _split_key(raw: str) -> tuple[str, list[str]]:
    """Split ``a[b][]`` into ``("a", ["b", ""])`` the way PHP does.

    PHP turns spaces and dots in the top-level name into underscores, and an
    opening bracket without its closing one into an underscore as well.
    """
    start = raw.find("[")
    if start <= 0 or "]" not in raw[start:]:
        return raw.replace(".", "_").replace(" ", "_").replace("[", "_"), []
    base = raw[:start].replace(".", "_").replace(" ", "_")
    parts: list[str] = []
    pos = start
    while pos < len(raw) and raw[pos] == "[":
        end = raw.find("]", pos)
        if end < 0:
            break
        parts.append(raw[pos + 1 : end])
        pos = end + 1
    return base, parts


def _next_index(node: dict[str, Any]) -> str:
    ints = [int(k) for k in node if k.lstrip("-").isdigit()]
    return str(max(ints) + 1 if ints else 0)


def _assign(target: dict[str, Any], base: str, parts: list[str], value: str) -> None:
    if not parts:
        target[base] = value
        return
    node = target.get(base)
    if not isinstance(node, dict):
        node = {}
        target[base] = node
    for depth, part in enumerate(parts):
        key = _next_index(node) if part == "" else part
        if depth == len(parts) - 1:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def listify(value: Any) -> Any:
    """Turn every mapping keyed ``"0".."n-1"`` into a list, recursively."""
    if isinstance(value, dict):
        items = {k: listify(v) for k, v in value.items()}
        if items and all(k == str(i) for i, k in enumerate(items)):
            return list(items.values())
        return items
    if isinstance(value, list):
        return [listify(v) for v in value]
    return value


def decode(query: str) -> dict[str, Any]:
    """Decode a query string or form body into nested dicts and lists of strings."""
    out: dict[str, Any] = {}
    if not query:
        return out
    for pair in query.split("&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        key = unquote_plus(raw_key)
        if not key:
            continue
        base, parts = _split_key(key)
        if not base:
            continue
        _assign(out, base, parts, unquote_plus(raw_value))
    return {k: listify(v) for k, v in out.items()}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _pairs(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _pairs(f"{prefix}[{k}]", v, out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _pairs(f"{prefix}[{i}]", v, out)
    elif value is not None:
        out.append((prefix, _scalar(value)))


def encode(params: dict[str, Any]) -> str:
    """Encode nested params as PHP's ``http_build_query`` does.

    ``True`` is ``1``, ``False`` is ``0``; ``None`` and empty lists or dicts
    vanish, as they do in PHP.
    """
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        _pairs(str(key), value, out)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in out)
