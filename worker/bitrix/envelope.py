"""Reading the portal's answers: success and error envelopes, and a batch's result maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from worker.bitrix.answers import NOT_RUN, BatchAnswer, CommandAnswer, CommandError, TimeInfo
from worker.bitrix.errors import PortalError, UnexpectedAnswerError

__all__ = ["read_batch", "read_envelope"]


def read_envelope(method: str, response: httpx.Response) -> Mapping[str, Any]:
    """The success envelope (with ``result``); PortalError for an error envelope."""
    status = response.status_code
    try:
        body: Any = _json(response)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise UnexpectedAnswerError(
            method=method, status=status, reason=f"not JSON ({kind})"
        ) from None
    if not isinstance(body, dict):
        raise UnexpectedAnswerError(
            method=method, status=status, reason="JSON that is not an object"
        )
    if body.get("error") is not None:
        # The stage-move refusal has an empty code, so "" is a code, not a missing one.
        raise PortalError(
            method=method,
            code=str(body["error"]),
            description=str(body.get("error_description") or ""),
            status=status,
        )
    if "result" not in body or not 200 <= status < 300:
        raise UnexpectedAnswerError(method=method, status=status, reason="neither result nor error")
    return body


def _json(response: httpx.Response) -> Any:
    # orjson reads a batch of fifty full items several times faster; what it
    # refuses (integers past 64 bits, NaN) the standard reader still gets to try.
    try:
        return orjson.loads(response.content)
    except ValueError:
        return response.json()


def _as_map(value: Any, what: str) -> dict[str, Any]:
    """A batch result map: PHP prints an empty one as ``[]`` and names 0..n-1 as a list."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    if isinstance(value, dict):
        return {str(key): item for key, item in value.items()}
    raise UnexpectedAnswerError(method="batch", status=200, reason=f"{what} is not a map")


def _command_error(entry: Any) -> CommandError:
    if isinstance(entry, dict):
        code = entry.get("error")
        return CommandError(
            code="" if code is None else str(code),
            description=str(entry.get("error_description") or ""),
        )
    return CommandError(code=str(entry), description="")


def read_batch(names: list[str], envelope: Mapping[str, Any]) -> BatchAnswer:
    """Every requested name with its answer; names the portal did not mention did not run."""
    outer = envelope["result"]
    if not isinstance(outer, dict):
        raise UnexpectedAnswerError(method="batch", status=200, reason="result is not a map")
    results = _as_map(outer.get("result"), "result.result")
    errors = _as_map(outer.get("result_error"), "result.result_error")
    times = _as_map(outer.get("result_time"), "result.result_time")
    answers: dict[str, CommandAnswer] = {}
    for name in names:
        time = TimeInfo.parse(times.get(name))
        if name in errors:
            answers[name] = CommandAnswer(error=_command_error(errors[name]), time=time)
        elif name in results:
            answers[name] = CommandAnswer(result=results[name], time=time)
        else:
            answers[name] = NOT_RUN
    return BatchAnswer(commands=answers, time=TimeInfo.parse(envelope.get("time")))
