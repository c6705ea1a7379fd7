"""Storage for the limiter's state, behind one small interface.

The Redis backend and its outage handling are imported on first use: a worker
without LIMITER_URL never loads the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.limiter.backends.base import StateBackend
from worker.limiter.backends.memory import MemoryBackend
from worker.limiter.lazy import on_first_use

if TYPE_CHECKING:
    from worker.limiter.backends.availability import Availability
    from worker.limiter.backends.redis import Codec, RedisBackend

__all__ = ["Availability", "Codec", "MemoryBackend", "RedisBackend", "StateBackend"]

__getattr__ = on_first_use(
    __name__,
    {
        "Availability": "worker.limiter.backends.availability",
        "Codec": "worker.limiter.backends.redis",
        "RedisBackend": "worker.limiter.backends.redis",
    },
)
