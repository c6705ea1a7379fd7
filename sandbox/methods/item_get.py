"""``crm.item.get``: one item by id."""

from __future__ import annotations

from typing import Any

from sandbox.errors import RestError
from sandbox.methods.base import Call, Outcome, int_param, is_yes, require, schema_of

__all__ = ["item_get"]


def item_get(call: Call, params: dict[str, Any]) -> Outcome:
    schema = schema_of(call, params)
    item_id = int_param(require(params, "id"), "id")
    forced = call.state.faults.item_error(call.method, schema.entity.id, item_id)
    if forced is not None:
        raise RestError(forced)
    item = call.state.store.get(schema.entity.id, item_id)
    if item is None:
        raise RestError("NOT_FOUND")
    return Outcome({"item": schema.render(item, is_yes(params.get("useOriginalUfNames")))})
