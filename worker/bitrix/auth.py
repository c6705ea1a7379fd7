"""How calls are authorised: an inbound webhook, or an OAuth application.

A webhook's credential is part of the URL; OAuth sends ``auth=<access token>``
with each call and renews the token when the portal answers ``expired_token``.

Renewal is single-flight in a process (however many calls see the expiry at
once, they wait for one renewal) and takes turns across replicas through the
``TokenStore``: the store is read first (another replica may have renewed
already: its access token is taken), then the store's lock is held, the
store read again, and only then is the stored refresh token sent to the
token endpoint. The rotated refresh token is saved under a version check
before the lock is let go. ``invalid_grant`` first means somebody rotated
the token: the store is read again and its newer token used; only a stored
token that is itself refused stops the portal for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import structlog

from worker.bitrix.errors import NoAnswerError, TokenRenewalError, UnexpectedAnswerError
from worker.bitrix.tokens import StoredToken, TokenStore, fingerprint, version_of
from worker.bitrix.transport import no_answer

__all__ = ["Auth", "OAuthAuth", "WebhookAuth"]

_WEBHOOK_PATH = re.compile(r"^/rest/([0-9]+)/[^/]+/?$")
_REFRESH = "oauth token refresh"
_ROTATED_MEANWHILE = 3  # refusals followed by a newer stored token, before giving up


log = structlog.get_logger("worker.bitrix.auth")


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

    A stored refresh token descending from ``refresh_token`` is newer and is
    used; otherwise ``refresh_token`` starts a new lineage. ``on_new_secret``
    is told every token received or read (to mask it in logs) before the
    token is used anywhere.
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
        self._access: str | None = None
        self._inflight: asyncio.Future[str] | None = None
        self.refreshes = 0  # refresh requests made, for metrics
        self.lost_saves = 0  # refreshed tokens not saved: a newer one was stored meanwhile

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
            task = asyncio.ensure_future(self._renew(stale))
            self._inflight = task
            task.add_done_callback(self._finished)
        # shield: a caller being cancelled must not cancel the refresh the others wait for
        return await asyncio.shield(self._inflight)

    async def keep_alive(self, max_age_s: float) -> bool:
        """Renew the refresh token when the one in use is older than ``max_age_s``
        (or its age is unknown: nothing stored yet). An idle portal makes no call
        that would renew it, and the cloud lets a refresh token lapse after 28 days.
        True when it was due (renewed here, or by a replica meanwhile)."""
        if self._young(await self._read(), max_age_s):
            return False
        while self._inflight is not None:
            # A renewal already on its way (a call's) may be the one that was due.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._inflight)
            if self._young(await self._read(), max_age_s):
                return True
        task = asyncio.ensure_future(self._renew_aged(max_age_s))
        self._inflight = task
        task.add_done_callback(self._finished)
        await asyncio.shield(task)
        return True

    def _young(self, stored: StoredToken | None, max_age_s: float) -> bool:
        return (
            stored is not None
            and stored.origin == self._origin
            and self._clock() - stored.saved_at < max_age_s
        )

    async def _renew_aged(self, max_age_s: float) -> str:
        async with self._store.hold():
            stored = await self._read()
            if stored is not None and stored.access_token and self._young(stored, max_age_s):
                self._access = stored.access_token  # a replica renewed it meanwhile
                return stored.access_token
            return await self._refresh_under_lock(stored)

    def _finished(self, task: asyncio.Future[str]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    async def _renew(self, stale: str | None) -> str:
        stored = await self._read()
        if (taken := self._take(stored, stale)) is not None:
            return taken  # another replica renewed it
        async with self._store.hold():
            stored = await self._read()
            if (taken := self._take(stored, stale)) is not None:
                return taken  # renewed while this one waited for the lock
            return await self._refresh_under_lock(stored)

    async def _read(self) -> StoredToken | None:
        """The stored token, its secrets masked before anything can print them."""
        stored = await self._store.load()
        if stored is not None:
            self._on_new_secret(stored.refresh_token)
            if stored.access_token is not None:
                self._on_new_secret(stored.access_token)
        return stored

    def _take(self, stored: StoredToken | None, stale: str | None) -> str | None:
        """The stored access token if it is of this lineage and not the one that expired."""
        if stored is None or stored.origin != self._origin or stored.access_token is None:
            return None
        if stored.access_token in (stale, self._access):
            return None
        self._access = stored.access_token
        return self._access

    def _refresh_token_in(self, stored: StoredToken | None) -> str:
        if stored is not None and stored.origin == self._origin:
            return stored.refresh_token
        return self._configured  # nothing stored yet, or a newly configured lineage

    async def _refresh_under_lock(self, stored: StoredToken | None) -> str:
        refresh_token = self._refresh_token_in(stored)
        for tries_left in reversed(range(_ROTATED_MEANWHILE)):
            try:
                access, rotated = await self._grant(refresh_token)
                break
            except TokenRenewalError:
                # Somebody else may have rotated it (a holder whose lock ran out):
                # refused for good only when the stored token is the one refused.
                stored = await self._read()
                newer = self._refresh_token_in(stored)
                if newer == refresh_token or not tries_left:
                    raise
                if (taken := self._take(stored, None)) is not None:
                    return taken
                refresh_token = newer
        # The old refresh token is dead now: switch in memory first, so that even if
        # saving fails (and that failure is raised) the calls can go on.
        self._access = access
        renewed = StoredToken(
            refresh_token=rotated,
            origin=self._origin,
            saved_at=self._clock(),
            version=version_of(stored) + 1,
            access_token=access,
        )
        if not await self._store.save(renewed):
            # A newer token was saved while this holder stalled past its lock: that one
            # is the lineage's head; this access token still works until it expires.
            self.lost_saves += 1
        return access

    def _follow(self, endpoint: object) -> None:
        """Call the portal where the OAuth server says it is now: a portal's domain can
        change (its member_id does not). Never from https down to http."""
        if not isinstance(endpoint, str):
            return
        try:
            where = _origin(endpoint, "client_endpoint")
        except ValueError:
            return
        if where == self._where or (self._where.startswith("https:") and where.startswith("http:")):
            return
        log.info("portal.moved", before=self._where, now=where)
        self._where, self._rest = where, where + "/rest/"

    async def _grant(self, refresh_token: str) -> tuple[str, str]:
        """Send ``refresh_token`` to the token endpoint: the new access and refresh tokens."""
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
            # The call waiting for this token was not sent, whatever happened here.
            failure = no_answer(exc, method=_REFRESH, where=self._token_where, never_sent=True)
        if failure is not None:
            raise failure
        access, rotated = self._read_grant(response)
        self._on_new_secret(access)
        self._on_new_secret(rotated)
        return access, rotated

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
            self._follow(body.get("client_endpoint"))
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
