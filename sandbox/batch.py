"""``batch``: up to 50 commands in one request, each a method plus a PHP query string.

The request answers 200 even when commands fail: their errors go to
``result_error``. ``halt=1`` stops at the first failure. Commands past the
limit each get ``ERROR_BATCH_LENGTH_EXCEEDED``; ``batch`` inside ``batch`` is
refused. Each command runs through the same pipeline as a single call (its
own ``time`` block), but the bucket counts the whole batch once; what its
operating time is charged to is the pipeline's choice (``batch_charging``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox import phpquery
from sandbox.envelope import error_body
from sandbox.errors import RestError
from sandbox.methods import Outcome
from sandbox.references import resolve_references

__all__ = ["Execute", "php_truthy", "run_batch"]

Execute = Callable[[str, dict[str, Any]], tuple[Outcome, dict[str, Any]]]


def php_truthy(value: Any) -> bool:
    """PHP's ``(bool)``: ``"0"``, ``""``, ``0``, empty arrays and null are false.

    ``"false"`` and ``"N"`` are true, as in PHP.
    """
    return value not in (None, False, 0, "", "0") and value != [] and value != {}


def _php_map(values: dict[str, Any]) -> Any:
    """A result map as PHP's JSON prints it: empty is ``[]``, keys 0..n-1 make a list."""
    if not values:
        return []
    if all(k == str(i) for i, k in enumerate(values)):
        return list(values.values())
    return values


def _commands(cmd: Any) -> list[tuple[str, Any]]:
    if isinstance(cmd, dict):
        return [(str(k), v) for k, v in cmd.items()]
    if isinstance(cmd, list):
        return [(str(i), v) for i, v in enumerate(cmd)]
    return []


def run_batch(params: dict[str, Any], *, execute: Execute, max_commands: int) -> dict[str, Any]:
    """The ``result`` of a batch call."""
    halt = php_truthy(params.get("halt"))
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    maps = {"result": results, "error": errors, "total": totals, "next": nexts, "time": times}
    for index, (name, command) in enumerate(_commands(params.get("cmd"))):
        try:
            if index >= max_commands:
                raise RestError("ERROR_BATCH_LENGTH_EXCEEDED")
            method, _, query = str(command).partition("?")
            method = method.strip().strip("/").lower().removesuffix(".json")
            if method == "batch":
                raise RestError("ERROR_BATCH_METHOD_NOT_ALLOWED")
            args = resolve_references(phpquery.decode(query), maps)
            outcome, time = execute(method, args)
        except RestError as exc:
            errors[name] = error_body(exc)
            if halt:
                break
            continue
        results[name] = outcome.result
        times[name] = time
        if outcome.total is not None:
            totals[name] = outcome.total
        if outcome.next is not None:
            nexts[name] = outcome.next
    return {
        "result": _php_map(results),
        "result_error": _php_map(errors),
        "result_total": _php_map(totals),
        "result_next": _php_map(nexts),
        "result_time": _php_map(times),
    }
