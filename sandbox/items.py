"""The write path shared by ``crm.item.add`` and ``crm.item.update``.

It reads the caller's ``fields`` the way the portal does: unknown names are
ignored, read-only fields (and immutable ones on update) are silently reset,
values are coerced (``values``, ``files``, ``multifields``), the stage and
category rules applied (``stages``), and when no value differs nothing is
saved, so ``updatedTime`` stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from typing import Any

from sandbox.errors import RestError
from sandbox.files import NewFile, apply_file, file_ids
from sandbox.multifields import apply_fm
from sandbox.schema import EntitySchema
from sandbox.stages import UNSET, place
from sandbox.store import ItemStore
from sandbox.values import DROP, coerce, format_datetime, is_empty

__all__ = ["WriteContext", "write_item"]


@dataclass(frozen=True, slots=True)
class WriteContext:
    store: ItemStore
    tz: timezone
    user_id: int
    now: float
    original_names: bool = False
    forbidden_stages: frozenset[str] = frozenset()
    fm_ids_honoured: bool = True


def _read(
    ctx: WriteContext, schema: EntitySchema, raw: dict[str, Any], current: dict[str, Any] | None
) -> tuple[dict[str, Any], Any, Any]:
    lookup = schema.lookup(ctx.original_names)
    changes: dict[str, Any] = {}
    category: Any = UNSET
    stage: Any = UNSET
    for key, value in raw.items():
        f = lookup.get(key)
        if f is None or f.read_only or (f.immutable and current is not None):
            continue
        if f.name == "stageId":
            stage = None if is_empty(value) else str(value)
        elif f.name == "categoryId":
            category = coerce(f, value, ctx.tz)
        elif f.type == "crm_multifield":
            changes[f.name] = apply_fm(
                value,
                (current or {}).get(f.name) or [],
                ctx.store.next_fm_id,
                ids_honoured=ctx.fm_ids_honoured,
            )
        elif f.type == "file":
            changes[f.name] = apply_file(f, value, (current or {}).get(f.name))
        else:
            stored = coerce(f, value, ctx.tz)
            if stored is not DROP:
                changes[f.name] = stored
    return changes, category, stage


def _save_files(store: ItemStore, value: Any, old: Any) -> Any:
    if isinstance(value, NewFile):
        value = store.files.add(value.name, value.data)
    elif isinstance(value, list):
        value = [store.files.add(v.name, v.data) if isinstance(v, NewFile) else v for v in value]
    for gone in set(file_ids(old)) - set(file_ids(value)):
        store.files.delete(gone)
    return value


def write_item(
    ctx: WriteContext, schema: EntitySchema, raw: dict[str, Any], current: dict[str, Any] | None
) -> tuple[dict[str, Any], bool]:
    """The item's new values and whether they were saved (``False``: nothing differed)."""
    changes, category, stage = _read(ctx, schema, raw, current)
    base = current if current is not None else schema.blank()
    placement = place(
        schema.entity,
        current_category=base.get("categoryId") if current is not None else None,
        current_stage=base.get("stageId") if current is not None else None,
        requested_category=category,
        requested_stage=stage,
        forbidden_stages=ctx.forbidden_stages,
    )
    if placement.stage_id is not None:
        changes["stageId"] = placement.stage_id
        changes["stageSemanticId"] = placement.semantic
        if placement.category_id is not None:
            changes["categoryId"] = placement.category_id
    new = {**base, **changes}
    if current is None or (placement.stage_changed and not placement.category_changed):
        for f in schema.required:
            if is_empty(new.get(f.name)):
                raise RestError("CRM_FIELD_ERROR_REQUIRED", field=f.name)
    if current is not None and all(new[k] == current.get(k) for k in changes):
        return current, False
    for f in schema.fields:
        if f.type == "file" and f.name in changes:
            new[f.name] = _save_files(ctx.store, new[f.name], base.get(f.name))
    stamp = format_datetime(ctx.now, ctx.tz)
    new["updatedTime"], new["updatedBy"] = stamp, ctx.user_id
    if current is None:
        new["createdTime"], new["createdBy"] = stamp, ctx.user_id
        if "assignedById" in new and new["assignedById"] is None:
            new["assignedById"] = ctx.user_id
    if "movedTime" in new and (current is None or placement.stage_changed):
        new["movedTime"], new["movedBy"] = stamp, ctx.user_id
    return new, True
