"""Stage and category rules: where an item may move, and what a move requires.

A ``stageId`` outside the item's pipeline is silently reverted unless
``categoryId`` changes in the same call; a new category without a stage of
its own starts at that category's first stage. A move within the same
pipeline checks the required fields, and stages the webhook's user may not
enter answer the empty error code.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.entities import Category, EntityType
from sandbox.errors import RestError

__all__ = ["UNSET", "Placement", "place"]

UNSET: object = object()
"""A field the caller did not send."""


@dataclass(frozen=True, slots=True)
class Placement:
    category_id: int | None
    stage_id: str | None
    semantic: str | None
    stage_changed: bool
    category_changed: bool


def _category(entity: EntityType, category_id: object) -> Category:
    if not isinstance(category_id, int):
        raise RestError("CRM_FIELD_ERROR_VALUE_NOT_VALID", field="categoryId")
    category = entity.category(category_id)
    if category is None:
        raise RestError("CRM_FIELD_ERROR_VALUE_NOT_VALID", field="categoryId")
    return category


def place(
    entity: EntityType,
    *,
    current_category: int | None,
    current_stage: str | None,
    requested_category: object = UNSET,
    requested_stage: object = UNSET,
    forbidden_stages: frozenset[str] = frozenset(),
) -> Placement:
    """Where the item ends up; ``current_*`` are ``None`` for a new item."""
    default = entity.default_category
    if default is None:
        return Placement(None, None, None, stage_changed=False, category_changed=False)
    home = entity.category(current_category) if current_category is not None else None
    home = home or default
    category = home
    if (
        entity.category_field
        and requested_category is not UNSET
        and requested_category is not None
        and requested_category != home.id
    ):
        category = _category(entity, requested_category)
    stage_id = current_stage if current_stage is not None and category is home else None
    if isinstance(requested_stage, str) and category.has_stage(requested_stage):
        stage_id = requested_stage
    if stage_id is None:
        stage_id = category.stages[0].id
    stage = category.stage(stage_id)
    semantic = stage.semantic if stage is not None else "P"
    stage_changed = current_stage is not None and stage_id != current_stage
    if stage_changed and stage_id in forbidden_stages:
        raise RestError("STAGE_FORBIDDEN")
    return Placement(
        category_id=category.id if entity.category_field or entity.id == 31 else None,
        stage_id=stage_id,
        semantic=semantic,
        stage_changed=stage_changed,
        category_changed=current_category is not None and category.id != current_category,
    )
