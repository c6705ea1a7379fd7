"""/metrics, /healthz and /readyz on HTTP_PORT, served inside the worker's event loop.

/healthz answers 200 while the event loop runs. /readyz answers 200 only while
the worker consumes: connected to the broker and the portal not down; otherwise
503 with the reason, so an orchestrator stops routing work to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.observability.metrics import Metrics

__all__ = ["HealthServer", "InLoopServer"]


class InLoopServer:
    """A Starlette app served by uvicorn on ``port`` (every address), as a task of the
    worker's own event loop: no logging of its own, no lifespan."""

    def __init__(self, app: Starlette, *, port: int) -> None:
        config = uvicorn.Config(
            app,
            host="0.0.0.0",  # noqa: S104 - scrapers, probes and portals come from outside
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class HealthServer(InLoopServer):
    def __init__(self, *, port: int, metrics: Metrics, not_ready: Callable[[], str | None]) -> None:
        self._metrics = metrics
        self._not_ready = not_ready
        app = Starlette(
            routes=[
                Route("/metrics", self._metrics_page),
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
            ]
        )
        super().__init__(app, port=port)

    async def _metrics_page(self, request: Request) -> Response:
        return Response(generate_latest(self._metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        reason = self._not_ready()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
