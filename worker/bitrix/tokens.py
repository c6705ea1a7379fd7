"""Where the rotated OAuth refresh token is kept, so a restart and other replicas keep access.

Each refresh rotates the refresh token and the old one stops working, so the
newest one must outlive the process and be what every replica refreshes with.
A store keeps it with ``origin``, a fingerprint of the configured token it
descends from: a stored token of the same origin is newer than the configured
one and wins, while a newly configured token (another origin) replaces the
stored lineage. The access token received with it is kept beside it, so a
replica that finds its own expired takes the one another replica fetched.

Replicas take turns: a refresh happens while holding the store's lock (one
holder per portal, released after ``ttl_s`` even if its holder stalls), and a
save names the ``version`` it replaces, so a holder that stalled past its lock
cannot overwrite the newer token saved meanwhile. ``TokenStore`` is the seam;
`FileTokenStore` is for one host, ``RedisTokenStore`` for replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.bitrix.errors import TokenRenewalError

__all__ = [
    "LOCK_TTL_S",
    "FileTokenStore",
    "StoredToken",
    "TokenStore",
    "fingerprint",
    "version_of",
]

# How long one refresh may hold the lock: the token request's own time bound and more.
LOCK_TTL_S = 30.0


def fingerprint(token: str) -> str:
    """A one-way name for a token, safe to store and compare."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredToken:
    refresh_token: str
    origin: str  # fingerprint() of the configured refresh token this one descends from
    saved_at: float  # unix seconds
    version: int = 0  # one more than the token it replaced; 0 before any was stored
    access_token: str | None = None  # received with refresh_token, for the other replicas

    def __repr__(self) -> str:
        origin = self.origin[:12]
        return (
            f"StoredToken(refresh_token='***', origin={origin!r}, saved_at={self.saved_at}, "
            f"version={self.version})"
        )

    def to_json(self) -> str:
        """The form every store keeps."""
        return json.dumps(
            {
                "refresh_token": self.refresh_token,
                "origin": self.origin,
                "saved_at": self.saved_at,
                "version": self.version,
                "access_token": self.access_token,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredToken:
        """Read what `to_json` wrote (a value without version or access token too);
        ValueError when it is not that."""
        try:
            data = json.loads(raw)
            access = data.get("access_token")
            return cls(
                refresh_token=str(data["refresh_token"]),
                origin=str(data["origin"]),
                saved_at=float(data["saved_at"]),
                version=int(data.get("version", 0)),
                access_token=None if access is None else str(access),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError("not a stored token") from exc


def version_of(token: StoredToken | None) -> int:
    """The version a save replacing ``token`` names: 0 when nothing is stored."""
    return 0 if token is None else token.version


class TokenStore(Protocol):
    async def load(self) -> StoredToken | None:
        """The last saved token, None if there is none; TokenRenewalError if it cannot be read."""
        ...

    async def save(self, token: StoredToken) -> bool:
        """Keep ``token`` durably if the stored version is still ``token.version - 1``.

        False (nothing written) when another holder saved a newer token since;
        TokenRenewalError if the store fails.
        """
        ...

    async def forget(self) -> None:
        """Remove the stored token (the portal removed the application, asking for it)."""
        ...

    def hold(self) -> AbstractAsyncContextManager[None]:
        """The portal's refresh lock, across processes; held at most `LOCK_TTL_S`.

        TokenRenewalError when it cannot be taken within `LOCK_TTL_S`.
        """
        ...


class FileTokenStore:
    """A JSON file written atomically (temporary file, fsync, rename) with mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    async def load(self) -> StoredToken | None:
        return await asyncio.to_thread(self._load)

    async def save(self, token: StoredToken) -> bool:
        return await asyncio.to_thread(self._save_if_current, token)

    async def forget(self) -> None:
        lock = self.path.with_name(self.path.name + ".lock")
        for path in (self.path, lock):
            await asyncio.to_thread(path.unlink, missing_ok=True)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """An exclusive ``flock`` on ``<path>.lock``, for processes sharing the file."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = await asyncio.to_thread(self._lock, lock_path)
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _lock(self, lock_path: Path) -> int:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TokenRenewalError(
                f"cannot open the token lock file {lock_path}: {exc.strerror}"
            ) from None
        deadline = time.monotonic() + LOCK_TTL_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TokenRenewalError(
                        f"the token lock file {lock_path} stayed locked for {LOCK_TTL_S:g} s"
                    ) from None
                time.sleep(0.05)

    def _save_if_current(self, token: StoredToken) -> bool:
        # Saves are made while holding the lock, so nothing writes between the read and the write.
        if version_of(self._load()) != token.version - 1:
            return False
        self._save(token)
        return True

    def _load(self) -> StoredToken | None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenRenewalError(
                f"cannot read the token file {self.path}: {exc.strerror}"
            ) from None
        try:
            token = StoredToken.from_json(raw)
        except ValueError:
            raise TokenRenewalError(
                f"the token file {self.path} is not readable JSON; remove it to start "
                "again from the configured refresh token"
            ) from None
        return token

    def _save(self, token: StoredToken) -> None:
        body = token.to_json().encode()
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # mkstemp creates the file with mode 0600, so the token is never readable by others.
            fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(body)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            _fsync_dir(folder)
        except OSError as exc:
            raise TokenRenewalError(
                f"cannot write the token file {self.path}: {exc.strerror}"
            ) from None


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
