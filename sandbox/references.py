"""``$result[name][field]`` references between the commands of one batch.

The portal rewrites every parameter value in which ``$result``, ``$next``,
``$total``, ``$time`` or ``$error`` (any case) is followed by a non-space
character, so a user's own text like ``pay $result[x]`` does not arrive as
written. A value that is nothing but one reference takes the referenced
value whole (a list stays a list); inside longer text the reference becomes
its text, and an unresolved reference becomes empty.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["resolve_references"]

_REF = re.compile(r"\$(result|next|total|time|error)((?:\[[^\[\]]*\])*)", re.IGNORECASE)
_KEY = re.compile(r"\[([^\[\]]*)\]")


def _lookup(maps: dict[str, Any], word: str, path: str) -> Any:
    node: Any = maps.get(word.lower())
    for key in _KEY.findall(path):
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)


def _rewrite(value: str, maps: dict[str, Any]) -> Any:
    matches = [
        m
        for m in _REF.finditer(value)
        if m.group(2) or (m.end() < len(value) and not value[m.end()].isspace())
    ]
    if not matches:
        return value
    whole = matches[0]
    if len(matches) == 1 and whole.start() == 0 and whole.end() == len(value):
        found = _lookup(maps, whole.group(1), whole.group(2))
        return "" if found is None else found
    out, pos = [], 0
    for m in matches:
        out.append(value[pos : m.start()])
        out.append(_text(_lookup(maps, m.group(1), m.group(2))))
        pos = m.end()
    out.append(value[pos:])
    return "".join(out)


def resolve_references(params: Any, maps: dict[str, Any]) -> Any:
    """``params`` with every reference rewritten against the results so far."""
    if isinstance(params, dict):
        return {k: resolve_references(v, maps) for k, v in params.items()}
    if isinstance(params, list):
        return [resolve_references(v, maps) for v in params]
    if isinstance(params, str) and "$" in params:
        return _rewrite(params, maps)
    return params
