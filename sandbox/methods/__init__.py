"""The REST methods the sandbox implements, by name (``batch`` is handled by the pipeline)."""

from sandbox.methods.base import Call, Handler, Outcome
from sandbox.methods.item_add import item_add
from sandbox.methods.item_fields import item_fields
from sandbox.methods.item_get import item_get
from sandbox.methods.item_list import item_list
from sandbox.methods.item_update import item_update

__all__ = ["METHODS", "Call", "Handler", "Outcome"]

METHODS: dict[str, Handler] = {
    "crm.item.add": item_add,
    "crm.item.get": item_get,
    "crm.item.update": item_update,
    "crm.item.list": item_list,
    "crm.item.fields": item_fields,
}
