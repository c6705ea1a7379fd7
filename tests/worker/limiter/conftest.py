"""Fixtures for the limiter: a fake clock, and every backend the algorithms run over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from worker.limiter import FakeClock, MemoryBackend, StateBackend

BackendFactory = Callable[[], StateBackend[Any]]

BACKENDS: dict[str, BackendFactory] = {"memory": MemoryBackend}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(BACKENDS))
def make_backend(request: pytest.FixtureRequest) -> BackendFactory:
    """Each test that takes this runs once per backend, as the algorithms must not depend on it."""
    factory: BackendFactory = BACKENDS[request.param]
    return factory
