"""The in-process backend: a dict, changed without awaiting, so no other task can interleave."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MemoryBackend"]

S = TypeVar("S")
R = TypeVar("R")


class MemoryBackend(Generic[S]):
    """State for one worker process."""

    def __init__(self) -> None:
        self._values: dict[str, S] = {}

    async def modify(self, key: str, change: Callable[[S | None], tuple[S, R]]) -> R:
        value, result = change(self._values.get(key))
        self._values[key] = value
        return result
