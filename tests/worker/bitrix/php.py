"""PHP's ``parse_str`` in miniature, to check batch query strings the way the portal reads them.

PHP has one array type, so the result uses dicts only (keys as strings, the
way PHP prints them) and ``as_php`` brings a JSON value to the same form.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus


def _split(name: str) -> tuple[str, list[str]]:
    """``a[b][c]`` -> ``("a", ["b", "c"])``; a top-level name loses dots and spaces."""
    name = name.lstrip(" ")
    open_at = name.find("[")
    if open_at <= 0 or "]" not in name[open_at:]:
        return name.replace(".", "_").replace(" ", "_").replace("[", "_"), []
    base = name[:open_at].replace(".", "_").replace(" ", "_")
    keys: list[str] = []
    rest = name[open_at:]
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        keys.append(rest[1:close])
        rest = rest[close + 1 :]
    return base, keys


def parse_str(query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        base, keys = _split(unquote_plus(raw_name))
        if not base:
            continue
        value = unquote_plus(raw_value)
        if not keys:
            out[base] = value
            continue
        node = out.setdefault(base, {})
        if not isinstance(node, dict):
            node = out[base] = {}
        for depth, key in enumerate(keys):
            if key == "":
                key = str(max((int(k) for k in node if k.lstrip("-").isdigit()), default=-1) + 1)
            if depth == len(keys) - 1:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = node[key] = {}
                node = child
    return out


def as_php(value: Any, scalar: Any = str) -> Any:
    """A JSON value as parse_str would give it back: dicts with string keys, leaves as text."""
    if isinstance(value, dict):
        return {str(k): as_php(v, scalar) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return {str(i): as_php(v, scalar) for i, v in enumerate(value)}
    return scalar(value)
