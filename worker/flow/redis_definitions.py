"""The field definitions' cache in Redis, shared by the replicas of a LIMITER_URL.

A module of its own: a worker without LIMITER_URL never loads the Redis client.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["RedisDefinitionsCache"]


class RedisDefinitionsCache:
    """The cache in Redis, one key per portal host and entity type."""

    def __init__(self, redis: Redis, *, scope: str) -> None:
        self._redis = redis
        self._prefix = f"b24-worker:definitions:{scope}:"

    async def get(self, entity_type_id: int, *, max_age_s: float) -> Any | None:
        try:
            raw = await self._redis.get(f"{self._prefix}{entity_type_id}")
            stored = orjson.loads(raw) if raw is not None else None
        except (RedisError, OSError, ValueError):
            return None
        if not isinstance(stored, dict) or not isinstance(stored.get("at"), int | float):
            return None
        if time.time() - stored["at"] >= max_age_s:
            return None
        return stored.get("result")

    async def put(self, entity_type_id: int, result: Any, *, ttl_s: float) -> None:
        body = orjson.dumps({"at": time.time(), "result": result})
        with contextlib.suppress(RedisError, OSError):
            await self._redis.set(
                f"{self._prefix}{entity_type_id}", body, px=max(1, int(ttl_s * 1000))
            )
