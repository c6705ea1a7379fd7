"""What goes wrong with the registry, said without a secret."""

from __future__ import annotations

__all__ = ["RegistryError", "RegistryKeyError"]


class RegistryError(Exception):
    """A registry change or read that cannot be done; the message says why."""


class RegistryKeyError(RegistryError):
    """REGISTRY_KEY is missing, malformed, or opens none of the stored secrets."""
