"""File custom fields: upload, keep by id, delete; and the store that keeps the bytes.

A value is ``["name.ext", "<base64>"]`` (upload), ``{"id": N}`` (keep file N if
it is the current one, otherwise the current file is deleted) or an empty
value (delete). In a multiple field every element follows those rules and
files left out of the array are deleted. Uploads are only given ids when the
item is saved, so a call that fails leaves no orphan files.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sandbox.errors import RestError
from sandbox.fields import FieldDef
from sandbox.values import is_empty, php_type

__all__ = ["FileStore", "NewFile", "StoredFile", "apply_file", "file_ids"]


@dataclass(frozen=True, slots=True)
class NewFile:
    """An upload waiting for the item to be saved."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: int
    name: str
    data: bytes


class FileStore:
    """Uploaded files by id; ids are portal-wide, as on a real portal's disk."""

    def __init__(self) -> None:
        self._files: dict[int, StoredFile] = {}
        self._next_id = 1

    def add(self, name: str, data: bytes) -> int:
        file_id = self._next_id
        self._next_id += 1
        self._files[file_id] = StoredFile(file_id, name, data)
        return file_id

    def get(self, file_id: int) -> StoredFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: int) -> None:
        self._files.pop(file_id, None)

    def __len__(self) -> int:
        return len(self._files)


def _invalid(field: FieldDef) -> RestError:
    return RestError("CRM_FIELD_ERROR_VALUE_NOT_VALID", field=field.name)


def _upload(field: FieldDef, value: list[Any]) -> NewFile:
    if len(value) < 2 or not isinstance(value[0], str) or not isinstance(value[1], str):
        raise _invalid(field)
    try:
        data = base64.b64decode(value[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(field) from exc
    return NewFile(name=value[0], data=data)


def _kept_id(field: FieldDef, value: dict[str, Any]) -> int:
    raw = value.get("id")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    raise _invalid(field)


def _element(field: FieldDef, value: Any, current: list[int]) -> int | NewFile | None:
    if is_empty(value):
        return None
    if isinstance(value, list):
        return _upload(field, value)
    if isinstance(value, dict):
        file_id = _kept_id(field, value)
        return file_id if file_id in current else None
    raise _invalid(field)


def file_ids(value: Any) -> list[int]:
    """The stored file ids of a field value (single id, list of ids, or nothing)."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def apply_file(field: FieldDef, value: Any, current: Any) -> Any:
    """The field's new value: ids kept, ``NewFile`` for uploads, ``None``/``[]`` when empty."""
    now = file_ids(current)
    if not field.multiple:
        return _element(field, value, now)
    if is_empty(value):
        return []
    if isinstance(value, dict) and "id" not in value:
        value = list(value.values())
    if not isinstance(value, list | dict):
        raise RestError(
            "100",
            description=(
                f"Expected iterable value for multiple field, but got {php_type(value)} instead"
            ),
        )
    elements = value if isinstance(value, list) else [value]
    out: list[int | NewFile] = []
    for element in elements:
        kept = _element(field, element, now)
        if isinstance(kept, NewFile) or (kept is not None and kept not in out):
            out.append(kept)
    return out
