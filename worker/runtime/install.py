"""The application's install and uninstall events, on an HTTP endpoint of its own.

A Marketplace application is installed and removed by portals at any time.
Bitrix24 POSTs `ONAPPINSTALL` (with the portal's tokens and an application
token) and `ONAPPUNINSTALL` (with that application token again), form-encoded,
to the application's handler: this endpoint, on INSTALL_PORT, off by default.
It faces the internet (the portal calls it); /metrics and /status stay on
HTTP_PORT.

- Install. The tokens are checked with one refresh at the OAuth server with
  the application's own client id and secret: its answer must name the same
  member_id (a REST answer such as `app.info` names none). The portal is then
  registered under its member_id, with the refreshed token and the application
  token sealed; every worker serves it within a second or two. A reinstall of
  a portal registered already must carry the application token stored at
  install.
- Uninstall. It must carry that application token. The portal is then marked
  gone for good: its commands, queued and to come, end as `portal_gone`.
  `data[CLEAN]=1` also removes what the worker keeps of it beside the registry:
  its stored OAuth token (the registry's secrets go with the mark itself).

A refused event changes nothing and is answered 403, logged without a secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import structlog
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from schemas.wire import is_portal_key
from worker.observability.health import InLoopServer
from worker.registry import Registry, RegistryError
from worker.settings import PortalConfig

__all__ = ["AppEvents", "app_events_server"]

log = structlog.get_logger("worker.runtime.install")

# An event's form is a few hundred bytes; anything much larger is not one.
MAX_EVENT_BYTES = 64 * 1024


class AppEvents:
    """What an install or uninstall event does to the registry; `handle` answers
    with an HTTP status and a line of text (never a secret)."""

    def __init__(
        self,
        *,
        registry: Registry,
        client_id: str,
        client_secret: str,
        token_url: str,
        http: httpx.AsyncClient,
        changed: Callable[[], Awaitable[None]] | None = None,
        forget: Callable[[str, PortalConfig], Awaitable[None]] | None = None,
    ) -> None:
        """``forget``: remove what the worker keeps of a portal beside the registry
        (its OAuth token), for an uninstall with data[CLEAN]=1."""
        self._registry = registry
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_url = token_url
        self._http = http
        self._changed = changed
        self._forget = forget

    async def handle(self, form: Mapping[str, str]) -> tuple[int, str]:
        event = form.get("event", "").upper()
        member_id = form.get("auth[member_id]", "")
        if event not in ("ONAPPINSTALL", "ONAPPUNINSTALL"):
            return 400, "not an install or uninstall event"
        if not is_portal_key(member_id):
            return 400, "auth[member_id] missing or malformed"
        token = form.get("auth[application_token]", "")
        try:
            if event == "ONAPPINSTALL":
                status, text = await self._install(form, member_id, token)
            else:
                status, text = await self._uninstall(form, member_id, token)
        except RegistryError as exc:
            log.error("app.registry_failed", app_event=event, portal=member_id, error=str(exc))
            return 503, "the registry cannot be changed now"
        if status == 200 and self._changed is not None:
            await self._changed()
        return status, text

    async def _registered(self, member_id: str) -> bool:
        entry = await self._registry.entry(member_id)
        return entry is not None and entry.gone_at is None

    async def _token_matches(self, member_id: str, token: str) -> bool:
        stored = await self._registry.application_token(member_id)
        return stored is not None and hmac.compare_digest(stored, token)

    async def _install(
        self, form: Mapping[str, str], member_id: str, token: str
    ) -> tuple[int, str]:
        if not token:
            return 400, "auth[application_token] missing"
        if await self._registered(member_id) and not await self._token_matches(member_id, token):
            log.warning(
                "app.refused",
                app_event="ONAPPINSTALL",
                portal=member_id,
                reason="application token",
            )
            return 403, "a reinstall must carry the application token of the install"
        answer = await self._confirmed(form.get("auth[refresh_token]", ""))
        if answer is None or answer.get("member_id") != member_id:
            log.warning(
                "app.refused",
                app_event="ONAPPINSTALL",
                portal=member_id,
                reason="tokens not confirmed",
            )
            return 403, "the OAuth server did not confirm the tokens for this portal"
        endpoint = str(answer.get("client_endpoint") or form.get("auth[client_endpoint]", ""))
        parts = urlsplit(endpoint)
        config = PortalConfig(
            portal_url=f"{parts.scheme}://{parts.netloc}",
            client_id=self._client_id,
            client_secret=SecretStr(self._client_secret),
            refresh_token=SecretStr(str(answer["refresh_token"])),
            member_id=member_id,
        )
        await self._registry.add(
            member_id, config, replace=True, application_token=token, through_app=True
        )
        log.info("app.installed", portal=member_id, host=parts.netloc)
        return 200, "installed"

    async def _uninstall(
        self, form: Mapping[str, str], member_id: str, token: str
    ) -> tuple[int, str]:
        if not await self._registered(member_id):
            return 404, "no such portal is registered"
        if not await self._token_matches(member_id, token):
            log.warning(
                "app.refused",
                app_event="ONAPPUNINSTALL",
                portal=member_id,
                reason="application token",
            )
            return 403, "the application token differs from the install's"
        clean = form.get("data[CLEAN]") == "1"
        if clean and self._forget is not None:
            config = await self._registry.portal(member_id)
            if config is not None:
                await self._forget(member_id, config)
        await self._registry.mark_gone(member_id)
        log.info("app.uninstalled", portal=member_id, clean=clean)
        return 200, "uninstalled"

    async def _confirmed(self, refresh_token: str) -> dict[str, Any] | None:
        """The OAuth server's answer to one refresh with ``refresh_token``, or None."""
        if not refresh_token:
            return None
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": refresh_token,
        }
        try:
            answer = await self._http.post(self._token_url, data=form, timeout=30.0)
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            return None
        if answer.status_code != 200 or not isinstance(body, dict) or "refresh_token" not in body:
            return None
        return body


def app_events_server(*, port: int, events: AppEvents) -> InLoopServer:
    """`AppEvents` on its own port: a POST to any path is an event."""

    async def receive(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_EVENT_BYTES:
            return PlainTextResponse("too large for an event", status_code=413)
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        form = {name: values[0] for name, values in parsed.items()}
        status, text = await events.handle(form)
        return PlainTextResponse(text, status_code=status)

    app = Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])
    # Off HTTP_PORT: the portals call it from the internet, the scrapers must not.
    return InLoopServer(app, port=port)
