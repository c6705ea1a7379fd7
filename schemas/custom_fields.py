"""Custom and smart-process fields checked against the portal's own definitions.

Only the portal knows a custom field's type. The worker loads the definitions
with crm.item.fields and passes them here; this module stays pure. A
definition has the shape crm.item.fields returns per field:
`{type, isRequired, isReadOnly, isImmutable, isMultiple, isDynamic, title, upperName}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from schemas.entities.base import CAMEL_UF_NAME, ORIGINAL_UF_NAME
from schemas.errors import CommandValidationError, Problem
from schemas.values import (
    Date,
    DateTime,
    FileValue,
    Id,
    Number,
    Text,
    YesNo,
    check_free_value,
    require_array,
)

__all__ = ["FieldDefinition", "validate_custom_fields"]


class FieldDefinition(BaseModel):
    """One field as crm.item.fields describes it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    isRequired: bool = False
    isReadOnly: bool = False
    isImmutable: bool = False
    isMultiple: bool = False
    isDynamic: bool = False
    title: str | None = None
    upperName: str | None = None


# Field types of crm.item.fields (and user field types) by the value they take.
_VALUE_TYPES: dict[str, Any] = {
    "string": Text,
    "text": Text,
    "url": Text,
    "money": Text,
    "address": Text,
    "location": Text,
    "crm_status": Text,
    "crm_currency": Text,
    "integer": Id,
    "user": Id,
    "employee": Id,
    "enumeration": Id,
    "iblock_element": Id,
    "iblock_section": Id,
    "crm_category": Id,
    "crm_company": Id,
    "crm_contact": Id,
    "crm_lead": Id,
    "crm_deal": Id,
    "crm_quote": Id,
    "crm_entity": Id,
    "double": Number,
    "boolean": YesNo,
    "date": Date,
    "datetime": DateTime,
    "file": FileValue,
}


_FREE_ARRAY: TypeAdapter[Any] = TypeAdapter(
    Annotated[list[Any] | None, BeforeValidator(require_array)]
)


@cache
def _adapter(field_type: str, multiple: bool) -> TypeAdapter[Any] | None:
    value_type = _VALUE_TYPES.get(field_type)
    if value_type is None:
        return None
    if multiple:
        multiple_type: Any = Annotated[
            list[value_type] | None,  # type: ignore[valid-type]
            BeforeValidator(require_array),
        ]
        return TypeAdapter(multiple_type)
    return TypeAdapter(value_type)


def validate_custom_fields(
    fields: Mapping[str, Any],
    definitions: Mapping[str, FieldDefinition],
    *,
    original_uf_names: bool,
) -> dict[str, Any]:
    """Check every field that has a definition, and every custom field name.

    `definitions` is keyed as crm.item.fields returns them (camelCase names);
    with `original_uf_names` the UF_CRM_... spelling is matched by `upperName`.
    Returns the fields with normalised values; raises CommandValidationError
    naming each problem.
    """
    by_name = dict(definitions)
    if original_uf_names:
        by_name.update({d.upperName: d for d in definitions.values() if d.upperName})
    custom_name = ORIGINAL_UF_NAME if original_uf_names else CAMEL_UF_NAME
    problems: list[Problem] = []
    checked = dict(fields)
    for name, value in fields.items():
        definition = by_name.get(name)
        path = f"fields.{name}"
        if definition is None:
            if custom_name.fullmatch(name):
                problems.append(
                    Problem(path, "the portal has no such custom field: it would ignore it", None)
                )
            continue
        if definition.isReadOnly or definition.isImmutable:
            problems.append(
                Problem(path, "is read-only on the portal: it would silently keep its value", None)
            )
            continue
        try:
            checked[name] = _check_value(definition, value)
        except ValidationError as exc:
            for problem in CommandValidationError.from_validation_error(exc).problems:
                where = f"{path}.{problem.path}" if problem.path else path
                problems.append(Problem(where, problem.message, problem.given))
        except PydanticCustomError as exc:
            problems.append(Problem(path, exc.message(), None))
    if problems:
        raise CommandValidationError(problems)
    return checked


def _check_value(definition: FieldDefinition, value: Any) -> Any:
    adapter = _adapter(definition.type, definition.isMultiple)
    if adapter is not None:
        return adapter.validate_python(value)
    if definition.isMultiple:
        value = _FREE_ARRAY.validate_python(value)
    check_free_value(value)
    return value
