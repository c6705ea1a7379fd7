"""Portals registered at run time, their secrets sealed at rest."""

from worker.registry.errors import RegistryError, RegistryKeyError
from worker.registry.registry import Entry, Registry, open_registry, with_registry
from worker.registry.sealing import Sealer, new_key
from worker.registry.stores import RedisStore, SqliteStore, Store

__all__ = [
    "Entry",
    "RedisStore",
    "Registry",
    "RegistryError",
    "RegistryKeyError",
    "Sealer",
    "SqliteStore",
    "Store",
    "new_key",
    "open_registry",
    "with_registry",
]
