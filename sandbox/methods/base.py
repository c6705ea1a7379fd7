"""What every method handler gets and returns, and the parameter rules they share.

A handler is a plain function ``(call, params) -> Outcome`` that raises
``RestError`` to refuse; the request pipeline adds the ``time`` envelope and
the limits around it, for single calls and batch commands alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.errors import RestError
from sandbox.schema import EntitySchema
from sandbox.state import PortalState

__all__ = [
    "Call",
    "Handler",
    "Outcome",
    "fields_param",
    "int_param",
    "is_yes",
    "require",
    "schema_of",
]


@dataclass(frozen=True, slots=True)
class Call:
    state: PortalState
    user_id: int
    method: str


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Any
    total: int | None = None
    next: int | None = None


Handler = Callable[[Call, dict[str, Any]], Outcome]


def require(params: dict[str, Any], name: str) -> Any:
    """A parameter that must be present (error ``100`` otherwise, as the portal answers)."""
    if name not in params or params[name] is None:
        raise RestError("100", param="{" + name + "}")
    return params[name]


def int_param(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise RestError(
        "100",
        description=(
            f"Invalid value {{{value}}} to match with parameter {{{name}}}. "
            "Should be value of type int."
        ),
    )


def is_yes(value: Any) -> bool:
    """A Y/N method parameter such as ``useOriginalUfNames``."""
    return value is True or value in ("Y", "y", "true")


def schema_of(call: Call, params: dict[str, Any]) -> EntitySchema:
    """The entity type named by ``entityTypeId``, or NOT_FOUND as the portal answers."""
    type_id = int_param(require(params, "entityTypeId"), "entityTypeId")
    schema = call.state.schemas.get(type_id)
    if schema is None:
        raise RestError("TYPE_NOT_FOUND")
    if call.state.faults.extranet_user:
        raise RestError("allowed_only_intranet_user")
    return schema


def fields_param(params: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as a mapping; a PHP list (``fields[0]=...``) has only unknown names."""
    value = require(params, "fields")
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if not isinstance(value, dict):
        raise RestError(
            "100",
            description=(
                f"Invalid value {{{value}}} to match with parameter {{fields}}. "
                "Should be value of type array."
            ),
        )
    return value
