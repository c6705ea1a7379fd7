"""Where the rotated OAuth refresh token is kept, so a restart keeps access.

Each refresh rotates the refresh token and the old one stops working, so the
newest one must outlive the process. A store keeps it with ``origin``, a
fingerprint of the configured token it descends from: at start a stored
token of the same origin is newer than the configured one and wins, while a
newly configured token (another origin) replaces the stored lineage.
``TokenStore`` is the seam for a shared (Redis) store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.bitrix.errors import TokenRenewalError

__all__ = ["FileTokenStore", "StoredToken", "TokenStore", "fingerprint"]


def fingerprint(token: str) -> str:
    """A one-way name for a token, safe to store and compare."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredToken:
    refresh_token: str
    origin: str  # fingerprint() of the configured refresh token this one descends from
    saved_at: float  # unix seconds

    def __repr__(self) -> str:
        origin = self.origin[:12]
        return f"StoredToken(refresh_token='***', origin={origin!r}, saved_at={self.saved_at})"

    def to_json(self) -> str:
        """The form every store keeps."""
        return json.dumps(
            {"refresh_token": self.refresh_token, "origin": self.origin, "saved_at": self.saved_at}
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredToken:
        """Read what `to_json` wrote; ValueError when it is not that."""
        try:
            data = json.loads(raw)
            return cls(
                refresh_token=str(data["refresh_token"]),
                origin=str(data["origin"]),
                saved_at=float(data["saved_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError("not a stored token") from exc


class TokenStore(Protocol):
    async def load(self) -> StoredToken | None:
        """The last saved token, None if there is none; TokenRenewalError if it cannot be read."""
        ...

    async def save(self, token: StoredToken) -> None:
        """Keep ``token`` durably before it is used; TokenRenewalError if that fails."""
        ...


class FileTokenStore:
    """A JSON file written atomically (temporary file, fsync, rename) with mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    async def load(self) -> StoredToken | None:
        return await asyncio.to_thread(self._load)

    async def save(self, token: StoredToken) -> None:
        await asyncio.to_thread(self._save, token)

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
