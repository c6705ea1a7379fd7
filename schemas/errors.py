"""The one error schemas/ raises: a command that cannot be applied as given.

CommandValidationError (ValueError)
  .problems   every problem found, each with the field's path
  .reason     one line naming the first problem, for logs and failure events
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

__all__ = ["CommandValidationError", "Problem"]

_MAX_SHOWN = 60
# Errors whose input must not be echoed: an unexpected top-level key may carry a
# credential (auth, a token), and a JSON decoding error would echo the body.
_SILENT_TYPES = {"extra_forbidden", "json_invalid", "json_type"}


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    given: str | None

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        given = f" (given {self.given})" if self.given is not None else ""
        return f"{where}{self.message}{given}"


class CommandValidationError(ValueError):
    """A command that fails validation; `reason` says why in one line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0])
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        self.reason = f"{first}{more}"
        super().__init__(self.reason)

    @classmethod
    def from_validation_error(
        cls, error: ValidationError, *, strip_tags: frozenset[str] = frozenset()
    ) -> CommandValidationError:
        return cls([_problem(detail, strip_tags) for detail in error.errors(include_url=False)])


def _problem(detail: ErrorDetails, strip_tags: frozenset[str]) -> Problem:
    loc = [part for part in detail["loc"] if part not in strip_tags]
    ctx = detail.get("ctx") or {}
    field = ctx.get("field")
    message = detail["msg"]
    value = detail["input"]
    if field is not None:
        loc.append(field)
        message = message.removeprefix(f"{field}: ")
        value = value.get(field) if isinstance(value, dict) else value
    path = ".".join(str(part) for part in loc)
    kind = detail["type"]
    if kind == "extra_forbidden":
        message = (
            "unexpected key: a command carries only entityTypeId, id, fields and "
            "useOriginalUfNames; portal addresses and credentials come from the worker's "
            "configuration, never from a message"
        )
    elif kind == "missing":
        message = "is required"
    elif kind == "json_invalid":
        message = f"the body is not valid JSON: {message.removeprefix('Invalid JSON: ')}"
    given = None if kind in _SILENT_TYPES or kind == "missing" else _show(value)
    return Problem(path=path, message=_lower_first(message), given=given)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool | type(None)) else _json_word(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _json_word(value: bool | None) -> str:
    return {True: "true", False: "false", None: "null"}[value]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
