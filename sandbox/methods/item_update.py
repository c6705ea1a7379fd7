"""``crm.item.update``: change the fields of one item.

The order of checks copies the portal: parameters, the entity type, rights
and plan, the item itself, then the fields. An update that changes nothing
is not saved and still succeeds.
"""

from __future__ import annotations

from typing import Any

from sandbox.errors import RestError
from sandbox.items import write_item
from sandbox.methods.base import (
    Call,
    Outcome,
    fields_param,
    int_param,
    is_yes,
    require,
    schema_of,
)

__all__ = ["item_update"]


def item_update(call: Call, params: dict[str, Any]) -> Outcome:
    schema = schema_of(call, params)
    type_id = schema.entity.id
    item_id = int_param(require(params, "id"), "id")
    fields = fields_param(params)
    state = call.state
    if type_id in state.faults.denied_entity_types:
        raise RestError("ACCESS_DENIED")
    if schema.entity.is_dynamic and state.faults.dynamic_items_restricted:
        raise RestError("UPDATE_DYNAMIC_ITEM_RESTRICTED")
    forced = state.faults.item_error(call.method, type_id, item_id)
    if forced is not None:
        raise RestError(forced)
    current = state.store.get(type_id, item_id)
    if current is None:
        raise RestError("NOT_FOUND")
    original = is_yes(params.get("useOriginalUfNames"))
    ctx = state.write_context(call.user_id, original_names=original)
    item, saved = write_item(ctx, schema, fields, current)
    if saved:
        state.store.replace(type_id, item_id, item)
        state.counters.saved()
    else:
        state.counters.unchanged_updates += 1
    return Outcome({"item": schema.render(item, original)})
