"""The registry of portals: added and removed at run time, shared by every replica.

Without LIMITER_URL it is a SQLite file (REGISTRY_PATH) beside the one worker;
with it, a hash in that Redis, under the deployment's UPDATE_QUEUE. Each
portal's secrets (its webhook URL, client secret, refresh token) are sealed
under REGISTRY_KEY before they are stored; what `entries` shows never holds one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr, ValidationError

from schemas.wire import is_portal_key
from worker.registry.errors import RegistryError, RegistryKeyError
from worker.registry.sealing import Sealer
from worker.registry.stores import RedisStore, SqliteStore, Store
from worker.settings import PortalConfig, check_member_ids, check_portal_config, redact_url

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = ["Entry", "Registry", "open_registry", "with_registry"]

_FORMAT = 1
_SECRETS = ("webhook_url", "client_secret", "refresh_token")
_LIMITS = (
    "rate_per_second",
    "rate_burst",
    "rate_reserve",
    "operating_limit_s",
    "operating_window_s",
)


@dataclass(frozen=True)
class Entry:
    """What the registry shows of a portal: never a secret."""

    key: str
    kind: Literal["webhook", "oauth"]
    host: str
    added_at: str
    webhook_url: str | None = None  # its code masked
    portal_url: str | None = None
    client_id: str | None = None
    member_id: str | None = None
    limits: dict[str, float] | None = None
    gone_at: str | None = None  # gone for good since then: its commands end as portal_gone

    def as_dict(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


class Registry:
    """Portals by key. ``sealer`` may be None for a registry that is only listed,
    shown or shrunk: adding a portal, or reading its credentials, needs REGISTRY_KEY."""

    def __init__(
        self,
        store: Store,
        sealer: Sealer | None,
        *,
        allow_http: bool = False,
        app: tuple[str, str] | None = None,
    ) -> None:
        """``app``: the Marketplace application's client id and secret (B24_APP_*),
        which the portals installed through it share and do not keep."""
        self._store = store
        self._sealer = sealer
        self._allow_http = allow_http
        self._app = app

    async def add(
        self,
        key: str,
        config: PortalConfig,
        *,
        replace: bool = False,
        application_token: str | None = None,
        through_app: bool = False,
    ) -> Entry:
        """Register ``config`` under ``key``; a key already there needs ``replace``.
        ``application_token``: the one its application was installed with, kept
        sealed (an uninstall or a reinstall must show it). ``through_app``: installed
        through the application, whose credentials the entry does not keep: they
        are the application's, taken from it each time."""
        if not is_portal_key(key):
            raise RegistryError(
                f"portal key {key!r}: use 1-63 of a-z, 0-9, '_', '.', '-', starting with a "
                "letter or digit"
            )
        try:
            check_portal_config(key, config, allow_http=self._allow_http, where=f"portal {key}")
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        present = await self._store.read(key)
        if not replace and present is not None and not _loaded(key, present).get("gone"):
            raise RegistryError(f"portal {key} is already registered (--replace to change it)")
        await self._check_names(key, config)
        sealer = self._need_sealer()
        entry = _entry(key, config, added_at=_now())
        sealed = {
            name: sealer.seal(value.get_secret_value())
            for name in _SECRETS
            if isinstance(value := getattr(config, name), SecretStr)
        }
        plain = {
            name: value for name, value in config if name not in _SECRETS and value is not None
        }
        doc = {"format": _FORMAT, "shown": entry.as_dict(), "config": plain, "sealed": sealed}
        if through_app:
            # The application's credentials once, for all its portals: not in the entry.
            plain.pop("client_id", None)
            sealed.pop("client_secret", None)
            doc["app"] = True
        if application_token is not None:
            doc["application_token"] = sealer.seal(application_token)
        await self._store.write({key: json.dumps(doc, sort_keys=True)})
        return entry

    async def application_token(self, key: str) -> str | None:
        """The application token ``key`` was installed with; None for a portal added
        otherwise, gone, or not registered."""
        raw = await self._store.read(key)
        if raw is None:
            return None
        sealed = _loaded(key, raw).get("application_token")
        return None if sealed is None else self._need_sealer().open(sealed)

    async def _check_names(self, key: str, config: PortalConfig) -> None:
        """RegistryError when ``key`` or its member_id already names another portal."""
        others = {
            other: _loaded(other, raw)
            for other, raw in (await self._store.read_all()).items()
            if other != key
        }
        for other, doc in others.items():
            member_id = doc["shown"].get("member_id")
            if member_id is not None and member_id in (key, config.member_id):
                raise RegistryError(
                    f"portal {key}: {member_id} is already the member_id of portal {other}"
                )
        if config.member_id is not None and config.member_id in others:
            raise RegistryError(
                f"portal {key}: its member_id is the key of portal {config.member_id}"
            )

    async def remove(self, key: str) -> bool:
        """Forget ``key``; False when it was not registered."""
        return await self._store.delete(key)

    async def mark_gone(self, key: str) -> bool:
        """``key`` is gone for good: its credentials are forgotten, and the workers end
        its commands, queued and to come, as `portal_gone`, never sending them.
        False when it was not registered."""
        raw = await self._store.read(key)
        if raw is None:
            return False
        shown = {**_loaded(key, raw)["shown"], "gone_at": _now()}
        doc = {"format": _FORMAT, "gone": True, "shown": shown}
        await self._store.write({key: json.dumps(doc, sort_keys=True)})
        return True

    async def gone(self) -> set[str]:
        """The portals marked gone for good."""
        return (await self.read())[1]

    async def entries(self) -> list[Entry]:
        return [_shown(key, doc) for key, doc in (await self._store.read_all()).items()]

    async def entry(self, key: str) -> Entry | None:
        doc = await self._store.read(key)
        return None if doc is None else _shown(key, doc)

    async def portals(self) -> dict[str, PortalConfig]:
        """Every registered portal with its credentials opened."""
        return (await self.read())[0]

    async def read(self) -> tuple[dict[str, PortalConfig], set[str]]:
        """In one read of the store: every registered portal with its credentials
        opened, and the portals marked gone for good."""
        docs = {key: _loaded(key, raw) for key, raw in (await self._store.read_all()).items()}
        gone = {key for key, doc in docs.items() if doc.get("gone")}
        found = {key: self._opened(key, doc) for key, doc in docs.items() if key not in gone}
        return found, gone

    async def portal(self, key: str) -> PortalConfig | None:
        """One registered portal with its credentials opened; None when gone or absent."""
        raw = await self._store.read(key)
        doc = None if raw is None else _loaded(key, raw)
        return None if doc is None or doc.get("gone") else self._opened(key, doc)

    def _opened(self, key: str, doc: dict[str, Any]) -> PortalConfig:
        sealer = self._need_sealer()
        opened = {name: sealer.open(value) for name, value in doc["sealed"].items()}
        if doc.get("app"):
            if self._app is None:
                raise RegistryError(
                    f"portal {key} was installed through the application: set "
                    "B24_APP_CLIENT_ID and B24_APP_CLIENT_SECRET"
                )
            opened |= {"client_id": self._app[0], "client_secret": self._app[1]}
        try:
            return PortalConfig.model_validate({**doc["config"], **opened})
        except ValidationError:
            raise RegistryError(f"portal {key}: its registry entry is not valid") from None

    async def rekey(self) -> int:
        """Seal every secret again under REGISTRY_KEY's first key; returns the portals."""
        sealer = self._need_sealer()
        docs = await self._store.read_all()
        changed = {}
        for key, raw in docs.items():
            doc = _loaded(key, raw)
            if doc.get("gone"):
                continue
            doc["sealed"] = {name: sealer.reseal(value) for name, value in doc["sealed"].items()}
            if "application_token" in doc:
                doc["application_token"] = sealer.reseal(doc["application_token"])
            changed[key] = json.dumps(doc, sort_keys=True)
        if changed:
            await self._store.write(changed)
        return len(changed)

    async def version(self) -> int:
        """A number that changes with every change to the registry."""
        return await self._store.version()

    async def close(self) -> None:
        await self._store.close()

    def _need_sealer(self) -> Sealer:
        if self._sealer is None:
            raise RegistryKeyError(
                "REGISTRY_KEY is not set: the registry keeps its secrets encrypted under it "
                "(make one with `b24-worker portals keygen`)"
            )
        return self._sealer


def open_registry(settings: Settings) -> Registry:
    """The registry these settings name: in LIMITER_URL's Redis, or at REGISTRY_PATH."""
    keys = settings.REGISTRY_KEY.get_secret_value()
    sealer = Sealer(keys) if keys.strip() else None
    store: Store
    limiter_url = settings.LIMITER_URL.get_secret_value()
    if limiter_url:
        # Imported here: a worker without LIMITER_URL never loads the Redis client.
        from redis.asyncio import Redis

        prefix = f"b24-worker:registry:{settings.UPDATE_QUEUE}:"
        store = RedisStore(Redis.from_url(limiter_url), prefix=prefix)
    else:
        store = SqliteStore(settings.REGISTRY_PATH)
    app = None
    if settings.B24_APP_CLIENT_ID and settings.B24_APP_CLIENT_SECRET is not None:
        app = (settings.B24_APP_CLIENT_ID, settings.B24_APP_CLIENT_SECRET.get_secret_value())
    return Registry(store, sealer, allow_http=settings.B24_ALLOW_HTTP, app=app)


async def with_registry(settings: Settings) -> Settings:
    """``settings`` with the registry's portals beside the configured ones.

    A key both registered and configured is refused: which of the two would
    serve it is a question the operator answers, not the worker.
    """
    registry = open_registry(settings)
    try:
        found = await registry.portals()
    finally:
        await registry.close()
    if not found:
        return settings
    both = sorted(set(found) & set(settings.portals()))
    if both:
        raise RegistryError(
            f"portal {', '.join(both)}: registered and also configured (B24_PORTALS, "
            "B24_PORTALS_FILE or B24_PORTAL_KEY); remove it from one of them"
        )
    merged = {**settings.B24_PORTALS, **found}
    try:
        check_member_ids(merged)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    return settings.model_copy(update={"B24_PORTALS": merged})


def _entry(key: str, config: PortalConfig, *, added_at: str) -> Entry:
    limits = {name: value for name in _LIMITS if (value := getattr(config, name)) is not None}
    if config.webhook_url is not None:
        url = config.webhook_url.get_secret_value()
        return Entry(
            key=key,
            kind="webhook",
            host=_host(url),
            added_at=added_at,
            webhook_url=redact_url(url),
            member_id=config.member_id,
            limits=limits or None,
        )
    return Entry(
        key=key,
        kind="oauth",
        host=_host(config.portal_url or ""),
        added_at=added_at,
        portal_url=config.portal_url,
        client_id=config.client_id,
        member_id=config.member_id,
        limits=limits or None,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc.lower()


def _loaded(key: str, raw: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RegistryError(f"portal {key}: its registry entry is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise RegistryError(
            f"portal {key}: its registry entry has a format this worker does not read"
        )
    return doc


def _shown(key: str, raw: str) -> Entry:
    shown = dict(_loaded(key, raw)["shown"])
    shown["key"] = key
    return Entry(**shown)
