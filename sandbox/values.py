"""How the portal reads a value sent for a field: booleans, numbers, dates, empties, multiples.

The sandbox plays the portal, traps included (see the facts file's "Values"
table): ``1`` and ``"1"`` are a boolean NO, an unparsable date is dropped
without an error, a scalar sent to a multiple field is error ``100``, and
``""``, ``null`` and ``[]`` clear a field while ``0``, ``"0"`` and ``false`` do not.
Files and multifields need the item's current value and live in ``files``
and ``multifields``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final

from sandbox.errors import RestError
from sandbox.fields import FieldDef

__all__ = [
    "DROP",
    "coerce",
    "format_datetime",
    "is_empty",
    "parse_offset",
    "php_type",
]

DROP: Final = object()
"""Returned for a value the portal silently ignores (the field keeps its value)."""

_YES = frozenset({"Y", "y", "true"})
_INT_TYPES = frozenset(
    {"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_deal", "crm_quote"}
    | {"crm_entity", "crm_category", "location"}
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)


def is_empty(value: Any) -> bool:
    """``""``, ``null``, ``[]`` (and ``{}``, the same PHP array) clear a field."""
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def php_type(value: Any) -> str:
    """The name PHP's ``gettype`` gives a decoded JSON value, as error texts use it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return "NULL" if value is None else "array"


def parse_offset(text: str) -> timezone:
    """``+03:00`` -> the fixed offset the portal formats its times in."""
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))


def format_datetime(moment: datetime | float, tz: timezone) -> str:
    """``2024-07-23T18:19:21+02:00``: the portal's way of writing a time."""
    if isinstance(moment, float | int):
        moment = datetime.fromtimestamp(moment, tz)
    return moment.astimezone(tz).isoformat(timespec="seconds")


def _invalid(field: FieldDef) -> RestError:
    return RestError("CRM_FIELD_ERROR_VALUE_NOT_VALID", field=field.name)


def _to_int(field: FieldDef, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise _invalid(field)


def _to_float(field: FieldDef, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _invalid(field)


def _to_date(value: Any, tz: timezone) -> str | object:
    match = _DATE.match(value) if isinstance(value, str) else None
    if match is None:
        return DROP
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return DROP
    return format_datetime(datetime(day.year, day.month, day.day, tzinfo=tz), tz)


def _to_datetime(value: Any, tz: timezone) -> str | object:
    if not isinstance(value, str) or not _DATETIME.match(value.strip()):
        return DROP
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return DROP
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return format_datetime(moment, tz)


def _single(field: FieldDef, value: Any, tz: timezone) -> Any:
    kind = field.type
    if is_empty(value):
        return "N" if kind == "boolean" else None
    if kind == "boolean":
        return "Y" if value is True or value in _YES else "N"
    if isinstance(value, list | dict):
        raise _invalid(field)
    if kind in _INT_TYPES:
        return _to_int(field, value)
    if kind == "double":
        return _to_float(field, value)
    if kind == "date":
        return _to_date(value, tz)
    if kind == "datetime":
        return _to_datetime(value, tz)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def coerce(field: FieldDef, value: Any, tz: timezone) -> Any:
    """The stored form of ``value`` for ``field``, or ``DROP`` when the portal ignores it."""
    if not field.multiple:
        return _single(field, value, tz)
    if is_empty(value):
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        raise RestError(
            "100",
            description=(
                f"Expected iterable value for multiple field, but got {php_type(value)} instead"
            ),
        )
    out = []
    for element in value:
        stored = _single(field, element, tz)
        if stored is not DROP and stored is not None:
            out.append(stored)
    return out
