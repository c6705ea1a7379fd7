"""What one entity type looks like through the API: its fields, names and rendering.

Items are stored under the camelCase field names; ``useOriginalUfNames=Y``
only changes the names of custom fields, on the way in and on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.entities import EntityType, build_entity_types
from sandbox.fields import FieldDef, build_fields

__all__ = ["EntitySchema", "build_schemas", "file_view"]

_PLAIN, _FILE, _FM = 0, 1, 2


def file_view(file_id: int) -> dict[str, Any]:
    """A stored file as items show it."""
    url = f"/_sandbox/files/{file_id}"
    return {"id": file_id, "url": url, "urlMachine": url}


@dataclass(slots=True)
class EntitySchema:
    entity: EntityType
    fields: tuple[FieldDef, ...]
    by_name: dict[str, FieldDef] = field(init=False)
    by_original: dict[str, FieldDef] = field(init=False)
    required: tuple[FieldDef, ...] = field(init=False)
    _plan: tuple[tuple[str, str, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {f.name: f for f in self.fields}
        self.by_original = {(f.upper_name if f.dynamic else f.name): f for f in self.fields}
        self.required = tuple(f for f in self.fields if f.required)
        self._plan = tuple(
            (
                f.name,
                f.upper_name if f.dynamic else f.name,
                _FILE if f.type == "file" else _FM if f.type == "crm_multifield" else _PLAIN,
            )
            for f in self.fields
        )

    def lookup(self, original_names: bool) -> dict[str, FieldDef]:
        """Input field name -> definition for the chosen naming mode."""
        return self.by_original if original_names else self.by_name

    def blank(self) -> dict[str, Any]:
        """A new item's values before the caller's fields are applied."""
        item: dict[str, Any] = {}
        for f in self.fields:
            if f.multiple:
                item[f.name] = []
            elif f.type == "boolean":
                item[f.name] = "N"
            else:
                item[f.name] = None
        for name, value in (
            ("opened", "Y"),
            ("currencyId", "USD"),
            ("opportunity", 0.0),
            ("taxValue", 0.0),
        ):
            if name in item:
                item[name] = value
        return item

    def render(self, item: dict[str, Any], original_names: bool) -> dict[str, Any]:
        """The item as the API returns it."""
        out: dict[str, Any] = {}
        for name, original, kind in self._plan:
            key = original if original_names else name
            value = item.get(name)
            if kind == _FILE:
                if isinstance(value, list):
                    value = [file_view(v) for v in value]
                elif value is not None:
                    value = file_view(value)
            elif kind == _FM:
                value = [dict(e) for e in value or ()]
            out[key] = value
        out["entityTypeId"] = self.entity.id
        return out

    def describe(self, original_names: bool) -> dict[str, Any]:
        """``crm.item.fields``'s ``fields`` map."""
        return {
            (f.upper_name if original_names and f.dynamic else f.name): f.describe()
            for f in self.fields
        }


def build_schemas(config: SandboxConfig) -> dict[int, EntitySchema]:
    types = build_entity_types(config.spa_types)
    ids = list(types)
    return {
        type_id: EntitySchema(entity, tuple(build_fields(entity, ids, config.custom_fields)))
        for type_id, entity in types.items()
    }
