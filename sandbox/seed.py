"""Seed data, so a demo needs no set-up: N items per entity type, made through the write path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.items import WriteContext, write_item
from sandbox.schema import EntitySchema

__all__ = ["seed_items"]


def _fields(schema: EntitySchema, n: int) -> dict[str, Any]:
    entity = schema.entity
    values: dict[str, Any] = {
        "title": f"{entity.title} #{n}",
        "name": f"Name{n}",
        "lastName": f"Last{n}",
        "opportunity": 1000.0 * n,
        "comments": f"Seeded {entity.title.lower()} {n}",
        "observers": [1],
    }
    if schema.entity.has_fm:
        values["fm"] = {
            "n0": {"typeId": "PHONE", "valueType": "WORK", "value": f"+1555000{n:04d}"},
            "n1": {"typeId": "EMAIL", "valueType": "WORK", "value": f"client{n}@example.com"},
        }
    for f in schema.required:
        if f.name not in values:
            filler = _filler(f.type, n)
            values[f.name] = [filler] if f.multiple else filler
    return {k: v for k, v in values.items() if k in schema.by_name}


def _filler(kind: str, n: int) -> Any:
    return {
        "boolean": "Y",
        "date": "2025-01-01",
        "datetime": "2025-01-01T12:00:00+00:00",
        "integer": n,
        "double": float(n),
        "file": [f"seed{n}.txt", "c2VlZA=="],
    }.get(kind, f"value {n}")


def seed_items(ctx: WriteContext, schemas: Mapping[int, EntitySchema], per_type: int) -> int:
    """Add ``per_type`` items to every entity type; returns how many were added."""
    added = 0
    for schema in schemas.values():
        for n in range(1, per_type + 1):
            item, _ = write_item(ctx, schema, _fields(schema, n), None)
            ctx.store.insert(schema.entity.id, item)
            added += 1
    return added
