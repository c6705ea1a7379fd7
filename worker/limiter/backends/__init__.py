"""Storage for the limiter's state, behind one small interface."""

from worker.limiter.backends.availability import Availability
from worker.limiter.backends.base import StateBackend
from worker.limiter.backends.memory import MemoryBackend
from worker.limiter.backends.redis import Codec, RedisBackend

__all__ = ["Availability", "Codec", "MemoryBackend", "RedisBackend", "StateBackend"]
