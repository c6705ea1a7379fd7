"""A sandbox portal for the tools' end-to-end tests (the worker runs in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as running:
        yield running
