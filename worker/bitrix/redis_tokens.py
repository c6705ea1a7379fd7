"""The rotated OAuth tokens kept in Redis, for workers that share LIMITER_URL.

Several replicas of one OAuth application must agree on the newest refresh
token (each refresh invalidates the previous one); a Redis key they all read
and write is that agreement. A second key is the refresh lock (redis-py's
``Lock``: a random value set with NX and an expiry, released only by its
owner), and a save is a compare-and-set on the stored version, made by one
Lua script. Redis must persist its data (AOF or RDB) for the token to survive
a Redis restart.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from worker.bitrix.errors import TokenRenewalError
from worker.bitrix.tokens import LOCK_TTL_S, StoredToken

__all__ = ["RedisTokenStore"]

# KEYS[1]: the token; ARGV[1]: the version the new one replaces; ARGV[2]: the new value.
_SAVE_IF_CURRENT = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
    local ok, decoded = pcall(cjson.decode, current)
    if ok and type(decoded) == 'table' and tonumber(decoded['version']) then
        version = tonumber(decoded['version'])
    end
end
if version ~= tonumber(ARGV[1]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class RedisTokenStore:
    """One JSON value under ``key`` (the tokens, their origin, version and time) and
    ``key:refresh-lock``."""

    def __init__(self, redis: Redis, *, key: str, lock_ttl_s: float = LOCK_TTL_S) -> None:
        self._redis = redis
        self._key = key
        self._lock_ttl_s = lock_ttl_s
        self._save_script = redis.register_script(_SAVE_IF_CURRENT)

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

    async def save(self, token: StoredToken) -> bool:
        try:
            kept = await self._save_script(
                keys=[self._key], args=[token.version - 1, token.to_json()]
            )
        except RedisError as exc:
            raise TokenRenewalError(
                f"cannot write the token to Redis ({type(exc).__name__})"
            ) from None
        return bool(kept)

    async def forget(self) -> None:
        try:
            await self._redis.delete(self._key, f"{self._key}:refresh-lock")
        except RedisError as exc:
            raise TokenRenewalError(
                f"cannot remove the token from Redis ({type(exc).__name__})"
            ) from None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        lock = self._redis.lock(
            f"{self._key}:refresh-lock",
            timeout=self._lock_ttl_s,
            blocking_timeout=self._lock_ttl_s,
            sleep=0.05,
        )
        try:
            taken = await lock.acquire()
        except RedisError as exc:
            raise TokenRenewalError(
                f"cannot take the refresh lock in Redis ({type(exc).__name__})"
            ) from None
        if not taken:
            raise TokenRenewalError(
                f"the refresh lock {self._key}:refresh-lock stayed taken for {self._lock_ttl_s:g} s"
            )
        try:
            yield
        finally:
            # Expired meanwhile (this holder stalled): another may hold it now; the
            # version check on save already kept the newer token.
            with contextlib.suppress(LockNotOwnedError, LockError, RedisError):
                await lock.release()
