"""``crm.item.add``: a new item from ``fields``, read by the same rules as an update."""

from __future__ import annotations

from typing import Any

from sandbox.errors import RestError
from sandbox.items import write_item
from sandbox.methods.base import Call, Outcome, fields_param, is_yes, schema_of

__all__ = ["item_add"]


def item_add(call: Call, params: dict[str, Any]) -> Outcome:
    schema = schema_of(call, params)
    fields = fields_param(params)
    faults = call.state.faults
    if schema.entity.id in faults.denied_entity_types:
        raise RestError("ACCESS_DENIED")
    forced = faults.item_error(call.method, schema.entity.id, None)
    if forced is not None:
        raise RestError(forced)
    original = is_yes(params.get("useOriginalUfNames"))
    ctx = call.state.write_context(call.user_id, original_names=original)
    item, _ = write_item(ctx, schema, fields, None)
    call.state.store.insert(schema.entity.id, item)
    call.state.counters.saved()
    return Outcome({"item": schema.render(item, original)})
