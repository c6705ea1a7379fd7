"""Entity type ids crm.item.update knows, and the kind of fields each one has."""

from __future__ import annotations

from typing import Literal

__all__ = ["ENTITY_KINDS", "EntityKind", "describe_entity_types", "entity_kind", "is_smart_process"]

EntityKind = Literal[
    "lead", "deal", "contact", "company", "quote", "smart_invoice", "smart_process"
]

ENTITY_KINDS: dict[int, EntityKind] = {
    1: "lead",
    2: "deal",
    3: "contact",
    4: "company",
    7: "quote",
    31: "smart_invoice",
}

_MAX_TYPE_ID = 2**31 - 1


def is_smart_process(entity_type_id: int) -> bool:
    """Smart processes use 128-192, or an even number from 1030 up."""
    return 128 <= entity_type_id <= 192 or (
        1030 <= entity_type_id <= _MAX_TYPE_ID and entity_type_id % 2 == 0
    )


def entity_kind(entity_type_id: object) -> EntityKind | None:
    """The kind of fields an entity type id has, or None when it is not one."""
    if not isinstance(entity_type_id, int) or isinstance(entity_type_id, bool):
        return None
    kind = ENTITY_KINDS.get(entity_type_id)
    if kind is None and is_smart_process(entity_type_id):
        return "smart_process"
    return kind


def describe_entity_types() -> str:
    return (
        "1 (lead), 2 (deal), 3 (contact), 4 (company), 7 (quote), 31 (smart invoice), "
        "or a smart process: 128-192 or an even number from 1030"
    )
