"""A scripted OAuth portal: a token endpoint that rotates refresh tokens, and REST calls."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

from worker.bitrix import OAuthAuth, StoredToken
from worker.bitrix.tokens import version_of

PORTAL_URL = "https://portal.example"
TOKEN_URL = "https://oauth.example/oauth/token/"
CLIENT_ID = "app.0000001"
CLIENT_SECRET = "clientsecretvalue0001"
FIRST_REFRESH = "refreshtoken0000"


@dataclass
class MemoryStore:
    """A store several `OAuthAuth` can share, as replicas share Redis."""

    stored: StoredToken | None = None
    saves: list[StoredToken] = field(default_factory=list)
    refused: list[StoredToken] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holds: int = 0

    async def load(self) -> StoredToken | None:
        await asyncio.sleep(0)
        return self.stored

    async def save(self, token: StoredToken) -> bool:
        await asyncio.sleep(0)
        if version_of(self.stored) != token.version - 1:
            self.refused.append(token)
            return False
        self.stored = token
        self.saves.append(token)
        return True

    async def forget(self) -> None:
        self.stored = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self.lock:
            self.holds += 1
            yield


@dataclass
class OAuthPortal:
    """Accepts only the newest access token; older ones get ``expired_token``."""

    refresh_tokens: set[str] = field(default_factory=lambda: {FIRST_REFRESH})
    issued: list[str] = field(default_factory=list)
    refresh_forms: list[dict[str, str]] = field(default_factory=list)
    refresh_urls: list[str] = field(default_factory=list)
    calls: list[str | None] = field(default_factory=list)
    always_expired: bool = False
    token_endpoint_down: bool = False
    # the errno of the OSError under the token endpoint's ConnectError, when down
    token_endpoint_errno: int = errno.ECONNREFUSED

    @property
    def access(self) -> str | None:
        return self.issued[-1] if self.issued else None

    def expire(self) -> None:
        """Every token issued so far is now expired."""
        self.issued.append("not-yet-issued")

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if str(request.url).startswith(TOKEN_URL):
            return await self._token(request)
        await asyncio.sleep(0)
        token = json.loads(request.content).get("auth")
        self.calls.append(token)
        if token in self.issued and (token != self.access or self.always_expired):
            return httpx.Response(
                401, json={"error": "expired_token", "error_description": "expired"}
            )
        if token != self.access:
            return httpx.Response(401, json={"error": "NO_AUTH_FOUND", "error_description": "x"})
        return httpx.Response(200, json={"result": {"ok": True}, "time": {"operating": 0}})

    async def _token(self, request: httpx.Request) -> httpx.Response:
        self.refresh_urls.append(str(request.url))
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.refresh_forms.append(form)
        if self.token_endpoint_down:
            cause = OSError(self.token_endpoint_errno, "cannot connect")
            raise httpx.ConnectError(
                f"cannot reach {request.url} with {request.content!r}"
            ) from cause
        await asyncio.sleep(0.01)  # let every waiting call pile up behind this refresh
        old = form.get("refresh_token", "")
        if form.get("client_secret") != CLIENT_SECRET or old not in self.refresh_tokens:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "no"})
        self.refresh_tokens.discard(old)
        number = len(self.refresh_forms)
        access, rotated = f"accesstoken{number:04d}", f"refreshtoken{number:04d}"
        self.refresh_tokens.add(rotated)
        self.issued.append(access)
        return httpx.Response(
            200,
            json={"access_token": access, "refresh_token": rotated, "expires_in": 3600},
        )

    def auth(
        self,
        store: MemoryStore,
        *,
        seen: list[str] | None = None,
        refresh: str = FIRST_REFRESH,
        handler: Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]] | None = None,
        now: float = 1000.0,
    ) -> tuple[httpx.AsyncClient, OAuthAuth]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler or self.handler))
        auth = OAuthAuth(
            http=http,
            portal_url=PORTAL_URL,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_token=refresh,
            token_url=TOKEN_URL,
            store=store,
            on_new_secret=None if seen is None else seen.append,
            clock=lambda: now,
        )
        return http, auth
