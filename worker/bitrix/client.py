"""The Bitrix24 REST client: single JSON calls and ``batch`` calls over one httpx client.

What is raised and what is returned:

- ``call`` returns the method's ``result`` and ``time`` in a ``CommandAnswer``;
  any error envelope is raised as ``PortalError`` (code, description, HTTP
  status), because it answers the whole request.
- ``batch`` returns a ``BatchAnswer`` with every requested name: each
  command's result, its ``CommandError`` from ``result_error``, or "not run".
  An error envelope for the batch request itself (limits, auth, a server
  fault) is raised as ``PortalError``: then no command ran.
- ``NoAnswerError`` (no answer; ``maybe_sent``) and ``UnexpectedAnswerError`` (not an
  envelope) are raised by both, as is ``TokenRenewalError`` when OAuth cannot renew.

An ``expired_token`` answer is handled here: the token is renewed (once for
all concurrent calls) and the request sent once more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from worker.bitrix.answers import BatchAnswer, CommandAnswer, TimeInfo
from worker.bitrix.auth import Auth
from worker.bitrix.encoding import php_query
from worker.bitrix.envelope import read_batch, read_envelope
from worker.bitrix.errors import NoAnswerError, PortalError
from worker.bitrix.transport import no_answer

__all__ = ["BitrixClient"]

_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")
_JSON = {"Content-Type": "application/json"}


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; text with lone surrogates goes as ``\\u`` escapes."""
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def _check_method(method: str) -> None:
    if not _METHOD.fullmatch(method):
        raise ValueError(f"not a REST method name: {method!r}")


class BitrixClient:
    """Calls one portal; owns no connection (``http`` is closed by whoever made it)."""

    def __init__(self, *, http: httpx.AsyncClient, auth: Auth) -> None:
        self._http = http
        self._auth = auth

    def __repr__(self) -> str:
        return f"BitrixClient({self._auth.where!r})"

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CommandAnswer:
        """One method as a single JSON call; its answer never holds an error (those raise)."""
        _check_method(method)
        envelope = await self._post(method, params or {})
        return CommandAnswer(result=envelope["result"], time=TimeInfo.parse(envelope.get("time")))

    async def batch(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any] | str]],
        *,
        halt: bool = False,
    ) -> BatchAnswer:
        """Named commands in one ``batch`` request.

        Every command's params must pass ``batch_blocker`` (ValueError names
        the first that does not); params given as a string are a query that
        ``php_query`` already made from them, and go as they are. More than 50
        commands are sent as they are: the portal answers the extra ones
        ``ERROR_BATCH_LENGTH_EXCEEDED``.
        """
        if not commands:
            raise ValueError("a batch needs at least one command")
        cmd: dict[str, str] = {}
        for name, (method, params) in commands.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"a batch command needs a non-empty name, not {name!r}")
            _check_method(method)
            if method.lower() == "batch":
                raise ValueError("batch cannot hold batch")
            if isinstance(params, str):
                cmd[name] = f"{method}?{params}"
                continue
            try:
                cmd[name] = f"{method}?{php_query(params)}"
            except ValueError as exc:
                raise ValueError(f"command {name!r} cannot go in a batch: {exc}") from None
        envelope = await self._post("batch", {"halt": 1 if halt else 0, "cmd": cmd})
        return read_batch(list(cmd), envelope)

    async def _post(self, method: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        token = await self._auth.token()
        renewed = False
        while True:
            body = dict(params) if token is None else {**params, "auth": token}
            response = await self._send(method, body)
            try:
                return read_envelope(method, response)
            except PortalError as exc:
                # 401 expired_token: nothing ran; renew once (shared by all calls) and resend.
                if exc.code != "expired_token" or renewed or token is None:
                    raise
            renewed = True
            token = await self._auth.refresh(token)
            if token is None:  # pragma: no cover - only OAuth sends a token
                raise AssertionError("an auth that sent a token could not renew it")

    async def _send(self, method: str, body: Mapping[str, Any]) -> httpx.Response:
        content = _json_bytes(body)
        failure: NoAnswerError | None = None
        try:
            return await self._http.post(
                self._auth.endpoint(method), content=content, headers=_JSON
            )
        except httpx.RequestError as exc:
            failure = no_answer(exc, method=method, where=self._auth.where)
        # Raised outside the handler so the httpx error (its text holds the URL)
        # is not even the suppressed context of this one.
        raise failure
