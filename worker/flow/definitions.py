"""The portal's field definitions (crm.item.fields) per entity type, cached and refreshed.

Only the portal knows its custom fields (their names, types, and which are
read-only), so the worker loads the definitions of an entity type the first
time a command names a custom field of it, reloads them every ``refresh_s``,
and checks those fields with the pure validator in ``schemas.custom_fields``.
A command with standard fields only costs the portal no such request: the
contract checks its fields, and a field the portal keeps as it was (read-only
or immutable there) comes back in the success event's ``notApplied``. A portal
that cannot answer never stops a command: the fields then go as they are, and
the portal has the last word.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from schemas.custom_fields import FieldDefinition, validate_custom_fields
from worker.bitrix import BitrixError, CommandAnswer
from worker.limiter.clock import Clock

__all__ = [
    "METHOD",
    "DefinitionsCache",
    "FieldDefinitions",
    "FieldsCaller",
]

METHOD = "crm.item.fields"
_CUSTOM_PREFIXES = ("ufCrm", "UF_CRM_")

log = structlog.get_logger("worker.flow.definitions")


class FieldsCaller(Protocol):
    """What is needed of the client: one JSON call (``BitrixClient`` is one)."""

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CommandAnswer: ...


class DefinitionsCache(Protocol):
    """Answers of crm.item.fields shared between replicas, so each is asked of the portal once.

    ``get`` returns the answer's ``result`` stored at most ``max_age_s`` ago
    (unix time), or None; neither method raises for trouble of the cache
    itself: the worker then asks the portal, as without a cache.
    """

    async def get(self, entity_type_id: int, *, max_age_s: float) -> Any | None: ...

    async def put(self, entity_type_id: int, result: Any, *, ttl_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class _Loaded:
    definitions: Mapping[str, FieldDefinition]  # keyed by camelCase name, as the portal keys them
    upper_names: frozenset[str]  # UF_CRM_... spellings, from upperName
    at: float  # monotonic time the load was asked for


@dataclass(slots=True)
class _Entry:
    loaded: _Loaded | None = None
    failed_at: float = -math.inf
    loading: asyncio.Task[None] | None = field(default=None, repr=False)


class FieldDefinitions:
    """crm.item.fields per entity type, loaded on first need and refreshed every ``refresh_s``.

    Concurrent callers share one load. After a failed load no other is tried
    for ``retry_s``, so a portal in trouble is not asked once per message;
    meanwhile the last good copy (if any) is still served. A custom field name
    the cached copy does not know makes ``check`` reload first when the copy is
    older than ``unknown_reload_s``: the field may have been created since.
    """

    def __init__(
        self,
        *,
        client: FieldsCaller,
        clock: Clock,
        refresh_s: float = 600.0,
        retry_s: float = 30.0,
        unknown_reload_s: float = 60.0,
        cache: DefinitionsCache | None = None,
    ) -> None:
        if refresh_s <= 0 or retry_s < 0 or unknown_reload_s < 0:
            raise ValueError(
                "refresh_s must be positive; retry_s and unknown_reload_s not negative"
            )
        self._client = client
        self._clock = clock
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._unknown_reload_s = unknown_reload_s
        self._cache = cache
        self._entries: dict[int, _Entry] = {}

    async def get(self, entity_type_id: int) -> Mapping[str, FieldDefinition] | None:
        """The type's definitions keyed by camelCase name; None when they cannot be had now.

        Never raises for portal trouble (an error answer, no answer, an answer
        of the wrong shape): that is logged as a warning and None returned, or
        the last good copy when there is one.
        """
        loaded = await self._ensure(entity_type_id, max_age_s=self._refresh_s)
        return None if loaded is None else loaded.definitions

    async def check(
        self, entity_type_id: int, fields: Mapping[str, Any], *, original_uf_names: bool
    ) -> dict[str, Any]:
        """The fields with custom values normalised; CommandValidationError names each problem.

        Checked: every custom field (``ufCrm...`` / ``UF_CRM_...``: unknown to
        the portal, wrong type, single or multiple, read-only or immutable).
        Standard fields are left to the command's own schema, and a command
        without custom fields is not held for a load. Without definitions the
        fields come back as they are.
        """
        picked = {n: v for n, v in fields.items() if n.startswith(_CUSTOM_PREFIXES)}
        if not picked:
            return dict(fields)
        loaded = await self._ensure(entity_type_id, max_age_s=self._refresh_s)
        if loaded is None:
            return dict(fields)
        if self._unknown_custom(picked, loaded, original_uf_names=original_uf_names):
            loaded = await self._ensure(entity_type_id, max_age_s=self._unknown_reload_s) or loaded
        return _normalised(fields, picked, loaded, original_uf_names=original_uf_names)

    def check_now(
        self, entity_type_id: int, fields: Mapping[str, Any], *, original_uf_names: bool
    ) -> dict[str, Any] | None:
        """As `check`, without waiting: None when the definitions would have to be
        loaded first (none yet, too old, or a custom field they do not know)."""
        picked = {n: v for n, v in fields.items() if n.startswith(_CUSTOM_PREFIXES)}
        if not picked:
            return dict(fields)
        entry = self._entries.get(entity_type_id)
        loaded = entry.loaded if entry is not None else None
        if loaded is None or self._clock.monotonic() - loaded.at >= self._refresh_s:
            return None
        if self._unknown_custom(picked, loaded, original_uf_names=original_uf_names):
            return None
        return _normalised(fields, picked, loaded, original_uf_names=original_uf_names)

    async def close(self) -> None:
        """Stop any load still running (on shutdown)."""
        tasks = [e.loading for e in self._entries.values() if e.loading is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _unknown_custom(
        fields: Mapping[str, Any], loaded: _Loaded, *, original_uf_names: bool
    ) -> bool:
        for name in fields:
            if not name.startswith(_CUSTOM_PREFIXES) or name in loaded.definitions:
                continue
            if original_uf_names and name in loaded.upper_names:
                continue
            return True
        return False

    async def _ensure(self, entity_type_id: int, *, max_age_s: float) -> _Loaded | None:
        entry = self._entries.setdefault(entity_type_id, _Entry())
        now = self._clock.monotonic()
        if entry.loaded is not None and now - entry.loaded.at < max_age_s:
            return entry.loaded
        if entry.loading is None:
            if now - entry.failed_at < self._retry_s:
                return entry.loaded
            entry.loading = asyncio.create_task(
                self._load(entity_type_id, entry, max_age_s=max_age_s),
                name=f"{METHOD} {entity_type_id}",
            )
        # Shielded: a caller that is cancelled leaves the load to the others.
        await asyncio.shield(entry.loading)
        return entry.loaded

    async def _load(self, entity_type_id: int, entry: _Entry, *, max_age_s: float) -> None:
        started = self._clock.monotonic()
        source = "portal"
        try:
            result = None
            if self._cache is not None:
                result = await self._cache.get(entity_type_id, max_age_s=max_age_s)
            if result is None:
                answer = await self._client.call(
                    METHOD, {"entityTypeId": entity_type_id, "useOriginalUfNames": "N"}
                )
                result = answer.result
                definitions = _parse(result)
                if self._cache is not None:
                    await self._cache.put(entity_type_id, result, ttl_s=self._refresh_s)
            else:
                source = "cache"
                definitions = _parse(result)
        except (BitrixError, ValueError) as exc:
            # ValueError covers pydantic's ValidationError: an answer of the wrong shape.
            entry.failed_at = self._clock.monotonic()
            log.warning(
                "definitions.unavailable",
                entity_type_id=entity_type_id,
                error=type(exc).__name__,
                detail=_detail(exc),
                using_previous=entry.loaded is not None,
                retry_after_s=self._retry_s,
            )
            return
        finally:
            entry.loading = None
        entry.loaded = _Loaded(
            definitions=MappingProxyType(definitions),
            upper_names=frozenset(d.upperName for d in definitions.values() if d.upperName),
            at=started,
        )
        entry.failed_at = -math.inf
        log.info(
            "definitions.loaded",
            entity_type_id=entity_type_id,
            fields=len(definitions),
            source=source,
        )


def _normalised(
    fields: Mapping[str, Any],
    picked: Mapping[str, Any],
    loaded: _Loaded,
    *,
    original_uf_names: bool,
) -> dict[str, Any]:
    """``fields`` with their custom ones (``picked``) checked against ``loaded``."""
    out = dict(fields)
    out.update(
        validate_custom_fields(picked, loaded.definitions, original_uf_names=original_uf_names)
    )
    return out


def _parse(result: Any) -> dict[str, FieldDefinition]:
    """``result.fields`` of crm.item.fields; ValueError when the answer has another shape."""
    fields = result.get("fields") if isinstance(result, Mapping) else None
    if not isinstance(fields, Mapping):
        raise ValueError("the answer has no 'fields' object")
    return {str(name): FieldDefinition.model_validate(value) for name, value in fields.items()}


def _detail(exc: Exception) -> str:
    """A short reason without values: the client's messages already hold no credentials."""
    if isinstance(exc, ValidationError):
        return f"{exc.error_count()} malformed field definition(s)"
    return str(exc)
