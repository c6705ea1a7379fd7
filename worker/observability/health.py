"""/metrics, /healthz, /readyz and /status on HTTP_PORT, served inside the worker's
event loop.

/healthz answers 200 while the event loop runs. /readyz answers 200 only while
the worker consumes: connected to the broker and the portal not down; otherwise
503 with the reason, so an orchestrator stops routing work to it. /status is a
page for people (`status.py`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from worker.observability.metrics import Metrics
from worker.observability.status import Status, render

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

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve as a task; on ``sockets`` when given (bound already), else on the port."""
        self._task = asyncio.create_task(self._server.serve(sockets))

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class HealthServer(InLoopServer):
    def __init__(
        self,
        *,
        port: int,
        metrics: Metrics,
        not_ready: Callable[[], str | None],
        status: Callable[[], Awaitable[Status]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._not_ready = not_ready
        self._status = status
        routes = [
            Route("/metrics", self._metrics_page),
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
        ]
        if status is not None:
            routes.append(Route("/status", self._status_page))
        app = Starlette(routes=routes)
        super().__init__(app, port=port)

    async def _metrics_page(self, request: Request) -> Response:
        return Response(generate_latest(self._metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _status_page(self, request: Request) -> Response:
        assert self._status is not None  # noqa: S101 - the route exists only with it
        page = render(await self._status())
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def _readyz(self, request: Request) -> Response:
        reason = self._not_ready()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
