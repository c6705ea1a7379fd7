"""The portal's in-memory data: items per entity type, files, multifield ids."""

from __future__ import annotations

from typing import Any

from sandbox.files import FileStore

__all__ = ["ItemStore"]


class ItemStore:
    """Items are plain dicts under camelCase field names; ids count from 1 per type."""

    def __init__(self, entity_type_ids: list[int]) -> None:
        self._items: dict[int, dict[int, dict[str, Any]]] = {t: {} for t in entity_type_ids}
        self._next_id: dict[int, int] = dict.fromkeys(entity_type_ids, 1)
        self._next_fm_id = 1
        self.files = FileStore()

    def get(self, entity_type_id: int, item_id: int) -> dict[str, Any] | None:
        return self._items[entity_type_id].get(item_id)

    def insert(self, entity_type_id: int, values: dict[str, Any]) -> dict[str, Any]:
        item_id = self._next_id[entity_type_id]
        self._next_id[entity_type_id] = item_id + 1
        values["id"] = item_id
        self._items[entity_type_id][item_id] = values
        return values

    def replace(self, entity_type_id: int, item_id: int, values: dict[str, Any]) -> None:
        self._items[entity_type_id][item_id] = values

    def all(self, entity_type_id: int) -> list[dict[str, Any]]:
        """Items of one type, by id."""
        return list(self._items[entity_type_id].values())

    def count(self, entity_type_id: int) -> int:
        return len(self._items[entity_type_id])

    def next_fm_id(self) -> int:
        fm_id = self._next_fm_id
        self._next_fm_id += 1
        return fm_id
