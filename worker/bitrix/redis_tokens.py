"""The rotated OAuth refresh token kept in Redis, for workers that share LIMITER_URL.

Several replicas of one OAuth application must agree on the newest refresh
token (each refresh invalidates the previous one); a Redis key they all read
and write is that agreement. Redis must persist its data (AOF or RDB) for the
token to survive a Redis restart.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.bitrix.errors import TokenRenewalError
from worker.bitrix.tokens import StoredToken

__all__ = ["RedisTokenStore"]


class RedisTokenStore:
    """One JSON value under `key`: the refresh token, its origin and when it was saved."""

    def __init__(self, redis: Redis, *, key: str) -> None:
        self._redis = redis
        self._key = key

    def __repr__(self) -> str:
        return f"RedisTokenStore(key={self._key!r})"

    async def load(self) -> StoredToken | None:
        try:
            raw = await self._redis.get(self._key)
        except RedisError as exc:
            raise TokenRenewalError(
                f"cannot read the token from Redis ({type(exc).__name__})"
            ) from None
        if raw is None:
            return None
        try:
            return StoredToken.from_json(raw)
        except ValueError:
            raise TokenRenewalError(
                f"the token under Redis key {self._key!r} is not readable JSON; delete the key "
                "to start again from the configured refresh token"
            ) from None

    async def save(self, token: StoredToken) -> None:
        body = token.to_json()
        try:
            await self._redis.set(self._key, body)
        except RedisError as exc:
            raise TokenRenewalError(
                f"cannot write the token to Redis ({type(exc).__name__})"
            ) from None
