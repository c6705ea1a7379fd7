"""The control endpoint under ``/_sandbox/``: observe the portal and inject faults.

``GET counters``, ``GET limits``, ``GET items/{type}``, ``GET items/{type}/{id}``,
``GET files/{id}``, ``GET|PATCH faults``, ``PATCH limits`` (``{"enabled": false}``),
``POST reset`` (optionally ``{"seed": N}``), ``POST oauth/authorize`` and
``POST oauth/tokens``. It never shows the webhook code or client secret.
"""

from __future__ import annotations

import json
from typing import Any

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
    ]
