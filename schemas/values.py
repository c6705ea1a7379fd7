"""Value types of crm.item.update fields, with the rules that keep users out of
the portal's silent traps (bitrix24-rest-facts.md, "Values").

The portal stores a boolean it does not recognise as "N", drops a date it cannot
parse and ignores a misspelt field, all without an error. These types refuse
such values here, with a message that says what was expected, so that a
producer learns about the mistake instead of the CRM quietly losing data.

Empties: "" and null clear a scalar field; [] (or null) clears a multiple one.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_ITEM_ID",
    "NO_VALUES",
    "YES_VALUES",
    "Date",
    "DateTime",
    "FileValue",
    "Id",
    "Ids",
    "ItemId",
    "Number",
    "Text",
    "YesNo",
    "check_free_value",
    "require_array",
    "to_id",
    "to_yes_no",
]

MAX_ITEM_ID = 2**31 - 1

# The portal reads "Y", "y", "true" and JSON true as yes; the no-spellings below
# are the ones that mean no on purpose. Everything else (1, "1", "yes") would be
# stored as "N" without an error, so it is refused here.
YES_VALUES: tuple[object, ...] = ("Y", "y", "true", True)
NO_VALUES: tuple[object, ...] = ("N", "n", "false", False)


def _error(kind: str, message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, context or None)


def to_yes_no(value: Any) -> Literal["Y", "N"]:
    """Normalise a boolean to the "Y"/"N" the portal stores."""
    if value is True or (isinstance(value, str) and value in ("Y", "y", "true")):
        return "Y"
    if value is False or (isinstance(value, str) and value in ("N", "n", "false")):
        return "N"
    raise _error(
        "yes_no",
        'expected "Y" or "N" (or true/false); the portal would store anything else, '
        '1 and "1" included, as "N"',
    )


# None is in the type only so that a field can default to "not given"; an
# explicit null is refused like any other unknown spelling.
YesNo = Annotated[
    Literal["Y", "N"] | None,
    BeforeValidator(to_yes_no),
    WithJsonSchema({"enum": ["Y", "N", "y", "n", "true", "false", True, False]}),
]


Text = Annotated[StrictStr | None, WithJsonSchema({"type": ["string", "null"]})]


def to_id(value: Any) -> int | Literal[""] | None:
    if value is None or value == "":
        return value  # type: ignore[no-any-return]
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise _error("id", 'expected an id: a non-negative integer (or "" or null to clear)')
    if not 0 <= number <= MAX_ITEM_ID:
        raise _error("id_range", f"expected an id between 0 and {MAX_ITEM_ID}")
    return number


_ID_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_ITEM_ID},
        {"type": "string", "pattern": "^[0-9]{1,10}$"},
        {"const": ""},
        {"type": "null"},
    ]
}

Id = Annotated[int | Literal[""] | None, BeforeValidator(to_id), WithJsonSchema(_ID_SCHEMA)]


ItemId = Annotated[StrictInt, Field(ge=1, le=MAX_ITEM_ID)]


def require_array(value: Any) -> list[Any] | None:
    if value is None or isinstance(value, list):
        return value
    hint = "; send [] to clear it" if value == "" else ""
    raise _error(
        "multiple",
        f"expected an array: this is a multiple field and the portal refuses a scalar{hint}",
    )


Ids = Annotated[
    list[Id] | None,
    BeforeValidator(require_array),
    WithJsonSchema({"type": ["array", "null"], "items": _ID_SCHEMA}),
]


_DECIMAL_PATTERN = r"^-?[0-9]{1,30}(\.[0-9]{1,30})?$"
_DECIMAL = re.compile(_DECIMAL_PATTERN)


def _number(value: Any) -> int | float | str | None:
    if value is None or value == "":
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool):
        raise _error("number", "expected a number, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return value
    raise _error(
        "number", 'expected a finite number, or one as text like "10.50" (or "" or null to clear)'
    )


Number = Annotated[
    int | float | str | None,
    BeforeValidator(_number),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": _DECIMAL_PATTERN},
                {"const": ""},
                {"type": "null"},
            ]
        }
    ),
]


def _calendar_type(
    *, kind: str, pattern: str, parse: Callable[[str], object], expected: str
) -> Any:
    """A date or date-time as text: it must match `pattern` and exist on the calendar.

    The pattern also goes into the JSON Schema, where "format" only annotates.
    """
    matches = re.compile(pattern).fullmatch
    message = (
        f'expected {expected} (or "" or null to clear); '
        "the portal silently drops one it cannot parse"
    )

    def check(value: Any) -> str | None:
        if value is None or value == "":
            return value  # type: ignore[no-any-return]
        if isinstance(value, str) and matches(value):
            try:
                parse(value)
            except ValueError:
                pass
            else:
                return value
        raise _error(kind, message)

    schema = {"type": "string", "format": kind.replace("datetime", "date-time"), "pattern": pattern}
    return Annotated[
        str | None,
        BeforeValidator(check),
        WithJsonSchema({"anyOf": [schema, {"const": ""}, {"type": "null"}]}),
    ]


Date = _calendar_type(
    kind="date",
    pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
    parse=date.fromisoformat,
    expected="a date as YYYY-MM-DD",
)
DateTime = _calendar_type(
    kind="datetime",
    pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([+-][0-9]{2}:[0-9]{2}|Z)$",
    parse=datetime.fromisoformat,
    expected="a date-time as YYYY-MM-DDThh:mm:ss+hh:mm",
)


def _file(value: Any) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, dict) and set(value) == {"id"}:
        to_id(value["id"])
        if value["id"] not in ("", None):
            return value
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        name, content = value
        if not name:
            raise _error("file", "expected a file name as the first element of [name, base64]")
        try:
            binascii.a2b_base64(content.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            raise _error(
                "file_base64", f"the content of file {name!r} is not valid base64"
            ) from None
        return value
    raise _error(
        "file",
        'expected a file value: ["name.ext", "<base64>"] to upload, {"id": N} to keep '
        'file N, or "" to delete',
    )


FileValue = Annotated[
    Any,
    AfterValidator(_file),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "array",
                    "prefixItems": [
                        {"type": "string", "minLength": 1},
                        {"type": "string", "contentEncoding": "base64"},
                    ],
                    "minItems": 2,
                    "maxItems": 2,
                },
                {
                    "type": "object",
                    "properties": {"id": {"type": "integer", "minimum": 1}},
                    "required": ["id"],
                    "additionalProperties": False,
                },
                {"const": ""},
                {"type": "null"},
            ]
        }
    ),
]

_INT64 = 2**63


def check_free_value(value: Any, *, depth: int = 0) -> None:
    """Refuse what JSON cannot carry to the portal in a value of unknown type.

    Custom field values are typed only by the portal; this check still refuses
    NaN and infinities (not JSON), integers beyond 64 bits and deep nesting.
    """
    if depth > 8:
        raise _error("depth", "value is nested too deeply (more than 8 levels)")
    if isinstance(value, float) and not math.isfinite(value):
        raise _error("finite", "expected a finite number; NaN and Infinity are not JSON")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise _error("int_range", "integer is out of the 64-bit range")
    if isinstance(value, list):
        for item in value:
            check_free_value(item, depth=depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            check_free_value(item, depth=depth + 1)
