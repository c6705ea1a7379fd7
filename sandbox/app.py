"""The HTTP surface of the sandbox portal (a starlette app).

Routes: webhook calls ``/rest/<user_id>/<code>/<method>[.json]``, OAuth calls
``/rest/<method>`` with ``auth``, the token endpoint ``/oauth/token/``, and the
control endpoint under ``/_sandbox/``. The portal state lives on the app, so
every app is its own portal.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from sandbox.bodies import merge_params
from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.control import control_routes
from sandbox.counters import saving
from sandbox.envelope import dumps
from sandbox.oauth import OAuthError
from sandbox.pipeline import RestRequest, handle_rest
from sandbox.state import PortalState
from sandbox.wire import drop_connection, html_page

__all__ = ["create_app", "portal_app", "portal_state"]

_JSON = "application/json; charset=utf-8"


def portal_state(app: Any) -> PortalState:
    """The portal behind an app made by ``create_app``."""
    state: PortalState = app.state.portal
    return state


def json_response(status: int, body: Any) -> Response:
    return Response(dumps(body), status_code=status, media_type=_JSON)


async def _params(request: Request) -> dict[str, Any]:
    body = await request.body()
    query = request.scope.get("query_string", b"").decode("latin-1")
    return merge_params(query, body, request.headers.get("content-type", ""))


async def _rest(request: Request, webhook: tuple[str, str] | None) -> Response:
    state = portal_state(request.app)
    params = await _params(request)
    if state.faults.random_html(state.rng):  # a proxy answers; the portal never sees it
        state.counters.html_answers += 1
        return html_page(state.faults.html_status)
    call = RestRequest(
        method=request.path_params["method"],
        params=params,
        webhook=webhook,
        scheme=request.url.scheme,
    )
    with saving() as saved:
        status, body = await handle_rest(state, call)
    if state.faults.random_disconnect(state.rng, wrote=bool(saved)):  # carried out, answer lost
        state.counters.disconnects += 1
        await drop_connection(request)
    return json_response(status, body)


async def rest_webhook(request: Request) -> Response:
    path = request.path_params
    return await _rest(request, (path["user_id"], path["code"]))


async def rest_oauth(request: Request) -> Response:
    return await _rest(request, None)


async def oauth_token(request: Request) -> Response:
    state = portal_state(request.app)
    endpoint = f"{request.url.scheme}://{request.url.netloc}"
    try:
        body = state.tokens.grant(await _params(request), endpoint)
    except OAuthError as exc:
        return json_response(exc.status, {"error": exc.error, "error_description": exc.description})
    return json_response(200, body)


def create_app(config: SandboxConfig | None = None, *, clock: Clock | None = None) -> Starlette:
    """A new portal (seeded as configured) behind a new ASGI app."""
    return portal_app(PortalState(config or SandboxConfig(), clock))


def portal_app(state: PortalState) -> Starlette:
    """An ASGI app serving the portal ``state``."""
    both = ["GET", "POST"]
    app = Starlette(
        routes=[
            Route("/rest/{user_id}/{code}/{method}", rest_webhook, methods=both),
            Route("/rest/{method}", rest_oauth, methods=both),
            Route("/oauth/token/", oauth_token, methods=both),
            Route("/oauth/token", oauth_token, methods=both),
            Mount("/_sandbox", routes=control_routes()),
        ]
    )
    app.state.portal = state
    return app
