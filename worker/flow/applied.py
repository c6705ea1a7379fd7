"""notApplied: the fields whose value in the returned item differs from what was sent.

The portal silently reverts a stage outside the item's pipeline, resets
read-only fields and drops values it cannot store; comparing what was sent with
the item it returns is how a producer learns about it. Values are compared as
the portal returns them: numbers as numbers, ids as integers, dates by their
day, empties ("", null, []) as one. Fields whose returned form is not
comparable (fm, files) are left out.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_file", "not_applied"]

_NOT_COMPARABLE = {"fm"}
_EMPTY: tuple[Any, ...] = ("", None, [], 0)


def not_applied(sent: dict[str, Any], item: dict[str, Any]) -> list[str]:
    """Names of sent fields the returned item does not show as sent."""
    differing = []
    for name, value in sent.items():
        if name in _NOT_COMPARABLE or name not in item or is_file(value):
            continue
        if not _same(value, item[name]):
            differing.append(name)
    return differing


def is_file(value: Any) -> bool:
    """True for a file field's value: a file kept or removed (``{"id": ...}``), or one
    to upload (``[name, content]``)."""
    if isinstance(value, dict):
        return set(value) == {"id"}
    if isinstance(value, list):
        return any(is_file(part) or _is_upload(part) for part in value) or _is_upload(value)
    return False


def _is_upload(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _same(sent: Any, stored: Any) -> bool:
    if sent == stored:
        return True
    if sent in ("", None, []):
        return stored in _EMPTY
    if isinstance(sent, list) and isinstance(stored, list):
        return len(sent) == len(stored) and all(map(_same, sent, stored))
    if isinstance(sent, bool) or isinstance(stored, bool):
        return False
    number = _number(sent)
    if number is not None and number == _number(stored):
        return True
    if isinstance(sent, str) and isinstance(stored, str) and len(sent) == 10:
        return stored[:10] == sent  # a date comes back as a date-time at midnight
    return False


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
