"""How calls are authorised: an inbound webhook, or an OAuth application.

A webhook's credential is part of the URL; OAuth sends ``auth=<access token>``
with each call and renews the token at the token endpoint when the portal
answers ``expired_token``. Renewal is single-flight: however many calls see
the expiry at once, one refresh request is made and all of them wait for it.
Each refresh rotates the refresh token, which is saved to the ``TokenStore``
before anything else uses it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from worker.bitrix.errors import NoAnswerError, TokenRenewalError, UnexpectedAnswerError
from worker.bitrix.tokens import StoredToken, TokenStore, fingerprint
from worker.bitrix.transport import describe_failure

__all__ = ["Auth", "OAuthAuth", "WebhookAuth"]

_WEBHOOK_PATH = re.compile(r"^/rest/([0-9]+)/[^/]+/?$")
_REFRESH = "oauth token refresh"


class Auth(Protocol):
    """What the client needs to authorise a call."""

    @property
    def where(self) -> str:
        """The portal's address with every credential replaced by ``***``, for messages."""
        ...

    def endpoint(self, method: str) -> str:
        """The URL to POST ``method`` to."""
        ...

    async def token(self) -> str | None:
        """The access token to send as ``auth``; None when the URL carries the credential."""
        ...

    async def refresh(self, stale: str | None) -> str | None:
        """A fresh token after ``stale`` expired; None when this kind of auth cannot renew."""
        ...


def _origin(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an https:// URL")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return f"{parts.scheme}://{host}"


class WebhookAuth:
    """``https://<portal>/rest/<user_id>/<code>/``: the code in the path is the credential."""

    def __init__(self, url: str) -> None:
        path = urlsplit(url).path
        found = _WEBHOOK_PATH.match(path)
        if not found:
            raise ValueError(
                "the webhook URL must look like https://<portal>/rest/<user_id>/<code>/"
            )
        origin = _origin(url, "the webhook URL")
        self._base = origin + path.rstrip("/") + "/"
        self._where = f"{origin}/rest/{found.group(1)}/***/"

    def __repr__(self) -> str:
        return f"WebhookAuth({self._where!r})"

    @property
    def where(self) -> str:
        return self._where

    def endpoint(self, method: str) -> str:
        return self._base + method

    async def token(self) -> None:
        return None

    async def refresh(self, stale: str | None) -> None:
        return None


class OAuthAuth:
    """An OAuth application's access token, renewed with a rotating refresh token.

    At the first call the store is read: a stored refresh token descending
    from ``refresh_token`` is newer and is used; otherwise ``refresh_token``
    starts a new lineage. ``on_new_secret`` is told every token received (to
    mask it in logs) before the token is used anywhere.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        portal_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_url: str,
        store: TokenStore,
        on_new_secret: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._where = _origin(portal_url, "the portal URL")
        self._rest = self._where + "/rest/"
        self._token_url = token_url
        self._token_where = _origin(token_url, "the token URL") + urlsplit(token_url).path
        self._client_id = client_id
        self._client_secret = client_secret
        self._configured = refresh_token
        self._origin = fingerprint(refresh_token)
        self._store = store
        self._on_new_secret = on_new_secret or (lambda _secret: None)
        self._clock = clock
        self._refresh_token: str | None = None  # None until the store was read
        self._access: str | None = None
        self._inflight: asyncio.Future[str] | None = None
        self.refreshes = 0  # refresh requests made, for metrics

    def __repr__(self) -> str:
        return f"OAuthAuth({self._where!r}, client_id={self._client_id!r})"

    @property
    def where(self) -> str:
        return self._where

    def endpoint(self, method: str) -> str:
        return self._rest + method

    async def token(self) -> str:
        if self._access is not None:
            return self._access
        return await self.refresh(None)

    async def refresh(self, stale: str | None) -> str:
        if self._access is not None and self._access != stale:
            return self._access  # another call has already renewed it
        if self._inflight is None:
            task = asyncio.ensure_future(self._renew())
            self._inflight = task
            task.add_done_callback(self._finished)
        # shield: a caller being cancelled must not cancel the refresh the others wait for
        return await asyncio.shield(self._inflight)

    def _finished(self, task: asyncio.Future[str]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    async def _current_refresh_token(self) -> str:
        if self._refresh_token is None:
            stored = await self._store.load()
            if stored is not None and stored.origin == self._origin:
                self._refresh_token = stored.refresh_token
                self._on_new_secret(stored.refresh_token)
            else:
                self._refresh_token = self._configured
        return self._refresh_token

    async def _renew(self) -> str:
        refresh_token = await self._current_refresh_token()
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": refresh_token,
        }
        failure: NoAnswerError | None = None
        self.refreshes += 1
        try:
            # POSTed as a form so no secret is ever part of a URL.
            response = await self._http.post(self._token_url, data=form)
        except httpx.RequestError as exc:
            kind, _sent = describe_failure(exc)
            # The call waiting for this token was not sent, whatever happened here.
            failure = NoAnswerError(
                method=_REFRESH, kind=kind, where=self._token_where, maybe_sent=False
            )
        if failure is not None:
            raise failure
        access, rotated = self._read_grant(response)
        # The old refresh token is dead now: switch in memory first, so that even if
        # saving fails (and that failure is raised) the calls can go on.
        self._on_new_secret(access)
        self._on_new_secret(rotated)
        self._refresh_token = rotated
        self._access = access
        await self._store.save(
            StoredToken(refresh_token=rotated, origin=self._origin, saved_at=self._clock())
        )
        return access

    def _read_grant(self, response: httpx.Response) -> tuple[str, str]:
        status = response.status_code
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UnexpectedAnswerError(method=_REFRESH, status=status, reason="not a JSON object")
        access = body.get("access_token") or None
        rotated = body.get("refresh_token") or None
        if status == 200 and isinstance(access, str) and isinstance(rotated, str):
            return access, rotated
        error = body.get("error")
        if isinstance(error, str) and 400 <= status < 500:
            raise TokenRenewalError(
                f"the OAuth server at {self._token_where} refused the refresh token: "
                f"{error} (HTTP {status}); the application must be authorised again"
            )
        raise UnexpectedAnswerError(
            method=_REFRESH, status=status, reason="no access and refresh token"
        )
