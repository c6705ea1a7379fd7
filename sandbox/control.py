"""The control endpoint under ``/_sandbox/``: observe the portal and inject faults.

``GET counters``, ``GET limits``, ``GET items/{type}``, ``GET items/{type}/{id}``,
``GET files/{id}``, ``GET|PATCH faults``, ``PATCH limits`` (``{"enabled": false}``),
``POST reset`` (optionally ``{"seed": N}``), ``POST oauth/authorize`` and
``POST oauth/tokens``. It never shows the webhook code or client secret.

``POST app/install`` (``{"handler": URL}``) and ``POST app/uninstall``
(``{"handler": URL, "clean": bool}``) play the portal installing or removing
its application: they POST ``ONAPPINSTALL`` (fresh tokens, a new application
token) or ``ONAPPUNINSTALL`` to the handler, form-encoded as Bitrix24 does,
and answer with the handler's status. An uninstall revokes the portal's
tokens; ``"application_token"`` in its body sends that one instead of the
real one (a forgery, for tests).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.envelope import dumps
from sandbox.state import PortalState

__all__ = ["control_routes"]


def _state(request: Request) -> PortalState:
    state: PortalState = request.app.state.portal
    return state


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


async def _patch(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    decoded = json.loads(raw)
    if not isinstance(decoded, dict):
        raise ValueError("expected a JSON object")
    return decoded


async def summary(request: Request) -> Response:
    state = _state(request)
    config = state.config
    return _json(
        {
            "user_id": config.user_id,
            "member_id": state.member_id,
            "entity_types": {t: s.entity.title for t, s in state.schemas.items()},
            "items": {t: state.store.count(t) for t in state.schemas},
            "limits_enabled": state.limits_enabled,
            "fm_ids": config.fm_ids,
            "rate": {"burst": config.rate_burst, "per_second": config.rate_per_second},
            "operating": {
                "limit_s": config.operating_limit_s,
                "window_s": config.operating_window_s,
                "cost_s": config.operating_cost_s,
                "costs": {m: str(config.cost_of(m)) for m, _ in config.operating_costs},
                "batch_charging": config.batch_charging,
            },
        }
    )


async def counters(request: Request) -> Response:
    state = _state(request)
    body = state.counters.as_dict()
    body["operating"] = state.operating.snapshot()
    return _json(body)


async def limits(request: Request) -> Response:
    state = _state(request)
    if request.method == "PATCH":
        patch = await _patch(request)
        if "enabled" in patch:
            state.limits_enabled = bool(patch["enabled"])
    return _json(
        {
            "enabled": state.limits_enabled,
            "bucket_level": round(state.bucket.level, 6),
            "operating": state.operating.snapshot(),
        }
    )


async def items(request: Request) -> Response:
    state = _state(request)
    schema = state.schemas.get(int(request.path_params["type_id"]))
    if schema is None:
        return _json({"error": "unknown entity type"}, 404)
    original = request.query_params.get("useOriginalUfNames") == "Y"
    return _json([schema.render(i, original) for i in state.store.all(schema.entity.id)])


async def item(request: Request) -> Response:
    state = _state(request)
    schema = state.schemas.get(int(request.path_params["type_id"]))
    found = schema and state.store.get(schema.entity.id, int(request.path_params["item_id"]))
    if schema is None or not found:
        return _json({"error": "not found"}, 404)
    return _json(schema.render(found, request.query_params.get("useOriginalUfNames") == "Y"))


async def file(request: Request) -> Response:
    stored = _state(request).store.files.get(int(request.path_params["file_id"]))
    if stored is None:
        return _json({"error": "not found"}, 404)
    return Response(stored.data, media_type="application/octet-stream")


async def faults(request: Request) -> Response:
    state = _state(request)
    if request.method in ("PATCH", "PUT", "POST"):
        try:
            state.faults.update(await _patch(request))
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
    return _json(state.faults.as_dict())


async def reset(request: Request) -> Response:
    state = _state(request)
    patch = await _patch(request)
    seed = patch.get("seed")
    state.reset(seed_items=int(seed) if seed is not None else None)
    return _json({"items": {t: state.store.count(t) for t in state.schemas}})


async def authorize(request: Request) -> Response:
    state = _state(request)
    return _json({"code": state.tokens.authorize(state.config.user_id)})


async def tokens(request: Request) -> Response:
    state = _state(request)
    endpoint = f"{request.url.scheme}://{request.url.netloc}"
    return _json(state.tokens.issue(state.config.user_id, endpoint))


async def app_install(request: Request) -> Response:
    state = _state(request)
    body = await _patch(request)
    endpoint = f"{request.url.scheme}://{request.url.netloc}"
    issued = state.tokens.issue(state.config.user_id, endpoint)
    state.application_token = secrets.token_hex(16)
    auth = {**issued, "application_token": state.application_token}
    data = {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"}
    return await _send_event(state, str(body.get("handler", "")), "ONAPPINSTALL", data, auth)


async def app_uninstall(request: Request) -> Response:
    state = _state(request)
    body = await _patch(request)
    endpoint = f"{request.url.scheme}://{request.url.netloc}"
    token = body.get("application_token", state.application_token or "")
    auth = {
        "domain": endpoint.split("://", 1)[-1],
        "client_endpoint": f"{endpoint}/rest/",
        "server_endpoint": f"{endpoint}/oauth/rest/",
        "member_id": state.member_id,
        "application_token": str(token),
    }
    data = {"CLEAN": "1" if body.get("clean") else "0", "LANGUAGE_ID": "en"}
    answer = await _send_event(state, str(body.get("handler", "")), "ONAPPUNINSTALL", data, auth)
    if "application_token" not in body:  # the real uninstall: the tokens die with it
        state.tokens.clear()
        state.application_token = None
    return answer


async def _send_event(
    state: PortalState, handler: str, event: str, data: dict[str, str], auth: dict[str, Any]
) -> Response:
    if not handler.startswith(("http://", "https://")):
        return _json({"error": 'give the handler\'s URL as {"handler": "http..."}'}, 400)
    form = {"event": event, "ts": str(int(state.clock.time()))}
    form |= {f"data[{name}]": value for name, value in data.items()}
    form |= {f"auth[{name}]": str(value) for name, value in auth.items()}
    try:
        async with httpx.AsyncClient(timeout=30.0) as client:
            sent = await client.post(handler, data=form)
    except httpx.HTTPError as exc:
        return _json({"error": f"the handler did not answer: {type(exc).__name__}"}, 502)
    return _json({"event": event, "member_id": state.member_id, "status": sent.status_code})


def control_routes() -> list[BaseRoute]:
    return [
        Route("/", summary),
        Route("/counters", counters),
        Route("/limits", limits, methods=["GET", "PATCH"]),
        Route("/items/{type_id:int}", items),
        Route("/items/{type_id:int}/{item_id:int}", item),
        Route("/files/{file_id:int}", file),
        Route("/faults", faults, methods=["GET", "PATCH", "PUT", "POST"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/oauth/authorize", authorize, methods=["POST"]),
        Route("/oauth/tokens", tokens, methods=["POST"]),
        Route("/app/install", app_install, methods=["POST"]),
        Route("/app/uninstall", app_uninstall, methods=["POST"]),
    ]
