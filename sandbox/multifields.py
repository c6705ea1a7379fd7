"""``fm``: the phones, e-mails, sites and messengers of leads, contacts and companies.

Keys ``n0``, ``n1``... (or entries without an id) add entries; a numeric key or
an ``id`` inside the entry updates that entry; an existing id with
``value: ""`` deletes it. ``typeId`` is required even to delete: an entry
without a known one is ignored. Entries not mentioned are kept.

A field report from a live portal says ``crm.item.update`` ignored an existing
entry's id and added the value again. With ``ids_honoured=False`` an entry
with an existing id and a value is added as a new entry (the one it names is
kept as it was); a deletion (an existing id with ``value: ""``) still deletes
that entry by its id, as nothing reported otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FM_TYPES", "apply_fm"]

FM_TYPES = frozenset({"PHONE", "EMAIL", "WEB", "IM", "LINK"})


def _entries(value: Any) -> list[tuple[str | None, Any]]:
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):
        return [(None, v) for v in value]
    return []


def _target_id(key: str | None, entry: dict[str, Any]) -> int | None:
    raw = entry.get("id", key)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    return None


def apply_fm(
    value: Any,
    current: list[dict[str, Any]],
    new_id: Callable[[], int],
    *,
    ids_honoured: bool = True,
) -> list[dict[str, Any]]:
    """The entries after applying ``value``; ``new_id`` hands out ids for added entries."""
    entries = [dict(e) for e in current]
    by_id = {e["id"]: e for e in entries}
    for key, entry in _entries(value):
        if not isinstance(entry, dict) or entry.get("typeId") not in FM_TYPES:
            continue
        type_id = entry["typeId"]
        text = entry.get("value")
        text = "" if text is None else str(text)
        target = _target_id(key, entry)
        existing = by_id.get(target) if target is not None else None
        if existing is not None and not ids_honoured and text != "":
            existing = None  # the id is ignored: the value is added as a new entry
        if existing is not None and existing["typeId"] == type_id:
            if text == "":
                entries.remove(existing)
                del by_id[existing["id"]]
            else:
                existing["value"] = text
                existing["valueType"] = str(entry.get("valueType") or existing["valueType"])
        elif existing is None and text != "":
            added = {
                "id": new_id(),
                "typeId": type_id,
                "valueType": str(entry.get("valueType") or "WORK"),
                "value": text,
            }
            entries.append(added)
            by_id[added["id"]] = added
    return entries
