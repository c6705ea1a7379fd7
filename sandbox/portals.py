"""Several portals in one process: a port each, one server, one event loop.

Each portal is an app of its own (``create_app``) with a state of its own:
items, request bucket, operating time, counters, faults, OAuth tokens and
the control endpoint on its port. One uvicorn server listens on every
portal's port, and ``PortalsByPort`` hands each request to the portal of the
port it arrived on. Apart from the process, the portals share only what they
start from: the configuration, and the field definitions made from it, which
nothing changes.

Portal ``k`` (from 0) listens on ``config.port + k``, or on a free port of
its own when ``config.port`` is 0, and is called ``portal{k + 1}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.app import portal_app
from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.server import listen
from sandbox.state import PortalState

__all__ = [
    "Portals",
    "PortalsByPort",
    "RunningSandbox",
    "open_portals",
    "portal_key",
    "portals_file",
]

MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    base_url: str  # http://127.0.0.1:PORT
    webhook_url: str  # .../rest/<user_id>/<code>/  (append the method name)
    oauth_url: str  # .../rest/  (append the method name, send ``auth``)
    token_url: str  # .../oauth/token/
    control_url: str  # .../_sandbox
    state: PortalState
    ca_file: str | None = None  # the self-signed certificate, when serving HTTPS
    key: str = "portal1"  # portal1 .. portalN, as the sandbox prints them

    @property
    def port(self) -> int:
        return self.state.config.port


def portal_key(index: int) -> str:
    """The name of the portal with this index (from 0): ``portal1``, ``portal2``, ..."""
    return f"portal{index + 1}"


def _handle(state: PortalState, ca_file: str | None = None, key: str = "portal1") -> RunningSandbox:
    """The addresses of a portal whose configuration names the port it listens on."""
    config = state.config
    base = f"{config.scheme}://{config.host}:{config.port}"
    return RunningSandbox(
        base_url=base,
        webhook_url=f"{base}/rest/{config.user_id}/{config.webhook_code}/",
        oauth_url=f"{base}/rest/",
        token_url=f"{base}/oauth/token/",
        control_url=f"{base}/_sandbox",
        state=state,
        ca_file=ca_file,
        key=key,
    )


class PortalsByPort:
    """An ASGI app that hands each request to the portal of the port it arrived on."""

    def __init__(self, apps: Mapping[int, ASGIApp]) -> None:
        self.apps = dict(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        app = self.apps.get(server[1]) if server else None
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "http":
            await PlainTextResponse("no portal on this port", 404)(scope, receive, send)


@dataclass(frozen=True, slots=True)
class Portals:
    """Portals ready to serve: hand ``app`` and ``sockets`` to one uvicorn server."""

    app: ASGIApp  # the portal's own app when there is one, else a PortalsByPort
    sockets: list[socket.socket]
    handles: list[RunningSandbox]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def check_ports(port: int, count: int) -> None:
    """ValueError unless ``count`` portals fit from ``port`` on (0: free ports)."""
    if count < 1:
        raise ValueError(f"the number of portals must be at least 1, not {count}")
    if port and port + count - 1 > MAX_PORT:
        raise ValueError(
            f"{count} portals from port {port} need ports up to {port + count - 1}; "
            f"the last port is {MAX_PORT}"
        )


def open_portals(
    config: SandboxConfig,
    count: int = 1,
    *,
    clock: Clock | None = None,
    ca_file: str | None = None,
) -> Portals:
    """``count`` portals of ``config``, each seeded as configured, each listening.

    Every portal's configuration is ``config`` with the port it listens on. The
    first portal is seeded; the others start from copies of its items and share
    its read-only field definitions, which makes hundreds start in a second. The
    sockets are listening when this returns, so a client may connect at once:
    its connection waits until the server runs. OSError (and nothing left
    open) when a port cannot be had.
    """
    check_ports(config.port, count)
    groups: list[list[socket.socket]] = []
    try:
        for k in range(count):
            groups.append(listen(config.host, config.port + k if config.port else 0))
        ports = [group[0].getsockname()[1] for group in groups]
        first = PortalState(replace(config, port=ports[0]), clock)
        copies = first.seeded_copies()
        states = [first] + [
            PortalState(
                replace(config, port=port), clock, schemas=first.schemas, store=next(copies)
            )
            for port in ports[1:]
        ]
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    apps: dict[int, ASGIApp] = {}
    handles = []
    for k, state in enumerate(states):
        apps[state.config.port] = portal_app(state)
        handles.append(_handle(state, ca_file, portal_key(k)))
    served = next(iter(apps.values())) if count == 1 else PortalsByPort(apps)
    return Portals(app=served, sockets=[s for g in groups for s in g], handles=handles)


def portals_file(portals: Sequence[RunningSandbox]) -> dict[str, dict[str, str]]:
    """``{"portal1": {"webhook_url": ...}, ...}``: the worker's B24_PORTALS object."""
    return {p.key: {"webhook_url": p.webhook_url} for p in portals}


@contextlib.contextmanager
def written_portals_file(path: str, portals: Sequence[RunningSandbox]) -> Iterator[None]:
    """Write ``portals_file`` to ``path`` (JSON, readable by its owner only, replaced in
    one step) for the block's duration; it holds the webhook codes, so it is removed
    when the block ends."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".sandbox-portals-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(portals_file(portals), out, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
