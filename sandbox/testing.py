"""Run a sandbox portal on a free 127.0.0.1 port for tests and benchmarks.

::

    async with running_sandbox(SandboxConfig(seed_items=3), clock=clock) as portal:
        httpx.post(portal.webhook_url + "crm.item.get", json={...})
        portal.state.counters.requests   # the portal's own state, in-process

    with serve_in_thread(config) as portal:   # the same, for synchronous code
        ...

The server runs in its own thread with its own event loop, so synchronous
clients (requests-based SDKs) and async clients in the test's loop both work.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace

import uvicorn

from sandbox.app import create_app, portal_state
from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.server import bind_socket, uvicorn_config
from sandbox.state import PortalState
from sandbox.tls import self_signed

__all__ = ["RunningSandbox", "running_sandbox", "serve_in_thread"]


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    base_url: str  # http://127.0.0.1:PORT
    webhook_url: str  # .../rest/<user_id>/<code>/  (append the method name)
    oauth_url: str  # .../rest/  (append the method name, send ``auth``)
    token_url: str  # .../oauth/token/
    control_url: str  # .../_sandbox
    state: PortalState
    ca_file: str | None = None  # the self-signed certificate, when serving HTTPS


def _handle(state: PortalState, config: SandboxConfig, port: int, ca: str | None) -> RunningSandbox:
    base = f"{config.scheme}://{config.host}:{port}"
    return RunningSandbox(
        base_url=base,
        webhook_url=f"{base}/rest/{config.user_id}/{config.webhook_code}/",
        oauth_url=f"{base}/rest/",
        token_url=f"{base}/oauth/token/",
        control_url=f"{base}/_sandbox",
        state=state,
        ca_file=ca,
    )


@contextlib.contextmanager
def serve_in_thread(
    config: SandboxConfig | None = None, *, clock: Clock | None = None
) -> Iterator[RunningSandbox]:
    """Start a portal on a free port; stop it (and join its thread) on exit."""
    config = replace(config or SandboxConfig(), host="127.0.0.1")
    app = create_app(config, clock=clock)
    sock = bind_socket(config.host, 0)
    port = sock.getsockname()[1]
    with contextlib.ExitStack() as stack:
        cert = key = None
        if config.https:
            cert, key = stack.enter_context(self_signed(config.host))
        server = uvicorn.Server(uvicorn_config(app, config, cert_file=cert, key_file=key))
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"sandbox-{port}",
            daemon=True,
        )
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError("the sandbox server did not start")
                threading.Event().wait(0.005)
            yield _handle(portal_state(app), config, port, cert)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


@contextlib.asynccontextmanager
async def running_sandbox(
    config: SandboxConfig | None = None, *, clock: Clock | None = None
) -> AsyncIterator[RunningSandbox]:
    """``serve_in_thread`` for async code: start and stop without blocking the loop."""
    manager = serve_in_thread(config, clock=clock)
    portal = await asyncio.to_thread(manager.__enter__)
    try:
        yield portal
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
