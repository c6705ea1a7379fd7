"""Storage for the limiter's state, behind one small interface."""

from worker.limiter.backends.base import StateBackend
from worker.limiter.backends.memory import MemoryBackend

__all__ = ["MemoryBackend", "StateBackend"]
