"""``crm.item.fields``: the field definitions of one entity type."""

from __future__ import annotations

from typing import Any

from sandbox.methods.base import Call, Outcome, is_yes, schema_of

__all__ = ["item_fields"]


def item_fields(call: Call, params: dict[str, Any]) -> Outcome:
    schema = schema_of(call, params)
    return Outcome({"fields": schema.describe(is_yes(params.get("useOriginalUfNames")))})
