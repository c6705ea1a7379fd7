"""Run a sandbox portal on a free 127.0.0.1 port for tests and benchmarks.

::

    async with running_sandbox(SandboxConfig(seed_items=3), clock=clock) as portal:
        httpx.post(portal.webhook_url + "crm.item.get", json={...})
        portal.state.counters.requests   # the portal's own state, in-process

    with serve_in_thread(config) as portal:   # the same, for synchronous code
        ...

    async with running_sandboxes(config, 3) as portals:   # three portals, one server
        portals[0].webhook_url, portals[1].webhook_url    # each on a port of its own

The server runs in its own thread with its own event loop, so synchronous
clients (requests-based SDKs) and async clients in the test's loop both work.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import uvicorn

from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.portals import RunningSandbox, open_portals
from sandbox.server import uvicorn_config
from sandbox.tls import self_signed

__all__ = [
    "RunningSandbox",
    "running_sandbox",
    "running_sandboxes",
    "serve_in_thread",
    "serve_many_in_thread",
]


@contextlib.contextmanager
def serve_many_in_thread(
    config: SandboxConfig | None = None, count: int = 2, *, clock: Clock | None = None
) -> Iterator[list[RunningSandbox]]:
    """Start ``count`` independent portals on free ports, served by one server in one
    thread; stop it (and join the thread) on exit. They share ``clock``, if given."""
    config = replace(config or SandboxConfig(), host="127.0.0.1", port=0)
    with contextlib.ExitStack() as stack:
        cert = key = None
        if config.https:
            cert, key = stack.enter_context(self_signed(config.host))
        portals = open_portals(config, count, clock=clock, ca_file=cert)
        stack.callback(portals.close)
        server = uvicorn.Server(uvicorn_config(portals.app, config, cert_file=cert, key_file=key))
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": portals.sockets},
            name=f"sandbox-{portals.handles[0].port}",
            daemon=True,
        )
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError("the sandbox server did not start")
                threading.Event().wait(0.005)
            yield portals.handles
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@contextlib.contextmanager
def serve_in_thread(
    config: SandboxConfig | None = None, *, clock: Clock | None = None
) -> Iterator[RunningSandbox]:
    """Start a portal on a free port; stop it (and join its thread) on exit."""
    with serve_many_in_thread(config, 1, clock=clock) as portals:
        yield portals[0]


@contextlib.asynccontextmanager
async def running_sandboxes(
    config: SandboxConfig | None = None, count: int = 2, *, clock: Clock | None = None
) -> AsyncIterator[list[RunningSandbox]]:
    """``serve_many_in_thread`` for async code: start and stop without blocking the loop."""
    manager = serve_many_in_thread(config, count, clock=clock)
    portals = await asyncio.to_thread(manager.__enter__)
    try:
        yield portals
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def running_sandbox(
    config: SandboxConfig | None = None, *, clock: Clock | None = None
) -> AsyncIterator[RunningSandbox]:
    """``serve_in_thread`` for async code: start and stop without blocking the loop."""
    async with running_sandboxes(config, 1, clock=clock) as portals:
        yield portals[0]
