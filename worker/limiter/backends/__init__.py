"""Storage for the limiter's state, behind one small interface.

The Redis backend and its outage handling are imported on first use: a worker
without LIMITER_URL never loads the Redis client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from worker.limiter.backends.base import StateBackend
from worker.limiter.backends.memory import MemoryBackend

if TYPE_CHECKING:
    from worker.limiter.backends.availability import Availability
    from worker.limiter.backends.redis import Codec, RedisBackend

__all__ = ["Availability", "Codec", "MemoryBackend", "RedisBackend", "StateBackend"]

_ON_FIRST_USE = {
    "Availability": "worker.limiter.backends.availability",
    "Codec": "worker.limiter.backends.redis",
    "RedisBackend": "worker.limiter.backends.redis",
}


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
