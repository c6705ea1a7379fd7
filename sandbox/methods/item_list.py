"""``crm.item.list``: items of one type, filtered, ordered and paged by 50.

Filters take the portal's prefixes: ``=`` (or none), ``!=``/``!``, ``>``,
``>=``, ``<``, ``<=``, ``@`` (in a list), ``!@`` (not in), ``%`` (contains).
``start`` is the offset of the page; ``start=-1`` skips counting, so no
``total`` comes back.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from sandbox.methods.base import Call, Outcome, int_param, is_yes, schema_of

__all__ = ["item_list"]

_OPS: list[tuple[str, Callable[[Any, Any], bool]]] = [
    ("!@", lambda a, b: a not in b),
    (">=", operator.ge),
    ("<=", operator.le),
    ("!=", operator.ne),
    ("@", lambda a, b: a in b),
    (">", operator.gt),
    ("<", operator.lt),
    ("=", operator.eq),
    ("!", operator.ne),
    ("%", lambda a, b: str(b).lower() in str(a).lower()),
]


def _split(key: str) -> tuple[Callable[[Any, Any], bool], str]:
    for prefix, op in _OPS:
        if key.startswith(prefix):
            return op, key[len(prefix) :]
    return operator.eq, key


def _like(stored: Any, value: Any) -> Any:
    """Bring a filter value (a string in form bodies) to the stored value's type."""
    if isinstance(value, list):
        return [_like(stored, v) for v in value]
    if isinstance(stored, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    return value


def _matches(item: dict[str, Any], conditions: list[tuple[Any, str, Any]]) -> bool:
    for op, name, value in conditions:
        stored = item.get(name)
        wanted = _like(stored, value)
        if op in (operator.gt, operator.ge, operator.lt, operator.le):
            if stored is None or isinstance(wanted, list):
                return False
            try:
                if not op(stored, wanted):
                    return False
            except TypeError:
                return False
        elif not op(stored, wanted):
            return False
    return True


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    def key(item: dict[str, Any]) -> tuple[bool, Any]:
        value = item.get(name)
        return value is None, value if value is not None else 0

    return key


def item_list(call: Call, params: dict[str, Any]) -> Outcome:
    schema = schema_of(call, params)
    original = is_yes(params.get("useOriginalUfNames"))
    lookup = schema.lookup(original)
    conditions = []
    raw_filter = params.get("filter")
    for key, value in raw_filter.items() if isinstance(raw_filter, dict) else ():
        op, name = _split(str(key))
        field = lookup.get(name)
        if field is not None:
            conditions.append((op, field.name, value))
    items = [i for i in call.state.store.all(schema.entity.id) if _matches(i, conditions)]
    order = params.get("order")
    for key, direction in reversed(list(order.items()) if isinstance(order, dict) else []):
        field = lookup.get(str(key))
        if field is not None:
            items.sort(key=_sort_key(field.name), reverse=str(direction).upper() == "DESC")
    start = int_param(params.get("start", 0) or 0, "start")
    page = call.state.config.list_page_size
    offset = max(start, 0)
    chunk = items[offset : offset + page]
    rendered = [schema.render(i, original) for i in chunk]
    select = params.get("select")
    if isinstance(select, list) and select and "*" not in select:
        keep = {str(s) for s in select} | {"id", "entityTypeId"}
        rendered = [{k: v for k, v in r.items() if k in keep} for r in rendered]
    more = offset + page < len(items)
    return Outcome(
        {"items": rendered},
        total=None if start == -1 else len(items),
        next=offset + page if more else None,
    )
