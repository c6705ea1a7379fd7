"""The registry's secrets at rest: Fernet tokens under keys from REGISTRY_KEY.

REGISTRY_KEY holds one or more Fernet keys, comma-separated. The first seals
every secret written; any of them opens one. To rotate: put a new key first
(`b24-worker portals keygen`), keep the old one after it, run `b24-worker
portals rekey` (every secret sealed again under the new key), then drop the
old key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

from worker.registry.errors import RegistryKeyError

__all__ = ["Sealer", "new_key"]


def new_key() -> str:
    """A fresh key for REGISTRY_KEY."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class Sealer:
    """Seals and opens the registry's secrets with the keys of REGISTRY_KEY."""

    def __init__(self, keys: str) -> None:
        # Imported here: a worker whose registry is empty never loads it.
        from cryptography.fernet import Fernet, MultiFernet

        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise RegistryKeyError(
                "REGISTRY_KEY is not set: the registry keeps its secrets encrypted under it "
                "(make one with `b24-worker portals keygen`)"
            )
        fernets = []
        for number, part in enumerate(parts, start=1):
            try:
                fernets.append(Fernet(part))
            except ValueError:
                # The value is a secret: say which of the keys, never what it holds.
                raise RegistryKeyError(
                    f"REGISTRY_KEY: key {number} of {len(parts)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes; `b24-worker portals keygen` makes one)"
                ) from None
        self._keys: MultiFernet = MultiFernet(fernets)

    def seal(self, secret: str) -> str:
        return self._keys.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        return self._unsealing(self._keys.decrypt, sealed)

    def reseal(self, sealed: str) -> str:
        """The same secret sealed under the first key."""
        return self._unsealing(self._keys.rotate, sealed)

    @staticmethod
    def _unsealing(use: Callable[[bytes], bytes], sealed: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return use(sealed.encode()).decode()
        except InvalidToken:
            raise RegistryKeyError(
                "REGISTRY_KEY opens none of the registry's secrets: a key it was sealed "
                "under is missing (keep the old key after the new one until `portals rekey`)"
            ) from None
