"""A local Bitrix24 portal for demos, load tests and CI (a real HTTP server).

Start one in tests with ``sandbox.testing.running_sandbox`` (async) or
``serve_in_thread`` (sync), several from one server with ``running_sandboxes``
or ``serve_many_in_thread``; build the ASGI app with ``create_app``; run it
from a shell with ``python -m sandbox`` (``--portals N`` for N portals).
"""

from sandbox.app import create_app, portal_state
from sandbox.clock import Clock, ManualClock, SystemClock
from sandbox.config import CustomFieldSpec, SandboxConfig
from sandbox.state import PortalState
from sandbox.testing import (
    RunningSandbox,
    running_sandbox,
    running_sandboxes,
    serve_in_thread,
    serve_many_in_thread,
)

__all__ = [
    "Clock",
    "CustomFieldSpec",
    "ManualClock",
    "PortalState",
    "RunningSandbox",
    "SandboxConfig",
    "SystemClock",
    "create_app",
    "portal_state",
    "running_sandbox",
    "running_sandboxes",
    "serve_in_thread",
    "serve_many_in_thread",
]
