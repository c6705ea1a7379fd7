"""The shared backend: state in Redis, changed by a versioned compare-and-set.

``modify`` reads a value and its version, applies the change in Python, and
one Lua script writes the result only if the version is still the one read;
otherwise the script hands back the current value and the change is applied
again to that. The algorithms stay plain Python, one implementation for
every backend and one test suite, instead of a second copy in Lua.

Each value is a hash under ``b24-worker:limiter:{scope}:{kind}:{key}`` (the
scope is the portal's host name, so every worker serving a portal shares it;
the kind keeps pacer and budget values apart) with a TTL refreshed on every
write, so a portal no longer served leaves nothing behind. A version is a
random token chosen by the writer: a write whose answer was lost on the way
back is recognised when it is retried, and is not applied twice.

While Redis cannot be reached, ``modify`` waits and retries (see
``availability``): a worker whose limiter is unreachable pauses, it never
sends unpaced.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

import structlog
from redis.asyncio import Redis

from worker.limiter.backends.availability import Availability

__all__ = ["Codec", "RedisBackend"]

log = structlog.get_logger("worker.limiter")

S = TypeVar("S")
R = TypeVar("R")

# KEYS[1]: the value's hash. ARGV: the version read ('' when unset), the new version,
# the new value, the TTL in ms. Returns nil once written, else {version, value} as they are.
_COMPARE_AND_SET = """
local held = redis.call('HMGET', KEYS[1], 'version', 'value')
if (held[1] or '') ~= ARGV[1] then
  return {held[1], held[2]}
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'value', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return nil
"""


@dataclass(frozen=True, slots=True)
class Codec(Generic[S]):
    """How one kind of state is stored: ``kind`` names its keys, the functions its bytes."""

    kind: str
    encode: Callable[[S], bytes]
    decode: Callable[[bytes], S]


class RedisBackend(Generic[S]):
    """State shared by every process that uses the same Redis and ``scope``."""

    def __init__(
        self,
        redis: Redis,
        *,
        scope: str,
        codec: Codec[S],
        ttl_s: float = 86_400.0,
        availability: Availability | None = None,
    ) -> None:
        """Values live ``ttl_s`` after their last write.

        Backends given one ``availability`` (one per Redis) report an outage once.
        """
        if not scope or ttl_s <= 0:
            raise ValueError("scope must be set and ttl_s positive")
        self._redis = redis
        self._compare_and_set = redis.register_script(_COMPARE_AND_SET)
        self._prefix = f"b24-worker:limiter:{scope}:{codec.kind}:"
        self._codec = codec
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._availability = availability or Availability(scope=scope)

    @property
    def reachable(self) -> bool:
        """Whether Redis answered this backend's last command."""
        return self._availability.reachable

    def key(self, key: str) -> str:
        """The Redis key that holds ``key``'s value."""
        return self._prefix + key

    async def modify(self, key: str, change: Callable[[S | None], tuple[S, R]]) -> R:
        name = self.key(key)
        version, raw = await self._availability.call(
            lambda: self._redis.hmget(name, ["version", "value"])
        )
        while True:
            value, result = change(self._decode(name, raw))
            encoded = self._codec.encode(value)
            if raw is not None and encoded == _bytes(raw):
                return result  # nothing to write: what was read is still a consistent answer
            written = secrets.token_hex(8)
            held = await self._availability.call(
                partial(
                    self._compare_and_set, [name], [_text(version), written, encoded, self._ttl_ms]
                )
            )
            # The version may be ours: the write went through but its answer was lost.
            if held is None or _text(held[0]) == written:
                return result
            version, raw = held

    def _decode(self, name: str, raw: bytes | str | None) -> S | None:
        if raw is None:
            return None
        try:
            return self._codec.decode(_bytes(raw))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # A value of an older or foreign format: start this key again rather than stop.
            log.warning("limiter.state_unreadable", key=name, error=type(exc).__name__)
            return None


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
