"""Every setting of the worker, read once from the environment.

Each variable is documented here and in README's configuration table. Secrets
(the AMQP password, the webhook code, OAuth credentials) are held as SecretStr
and never printed: `Settings.describe()` is the safe view for logs.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import textwrap
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from schemas.wire import (
    DEFAULT_DEAD_LETTER_QUEUE,
    DEFAULT_RESULT_QUEUE,
    DEFAULT_UPDATE_QUEUE,
    is_portal_key,
)
from worker.amqp.nodes import split_nodes
from worker.amqp.topology import Topology

__all__ = [
    "ConfigError",
    "Portal",
    "PortalConfig",
    "Settings",
    "check_member_ids",
    "check_portal_config",
    "load_settings",
    "member_ids",
    "portal_secrets",
    "redact_url",
]

# A portal queue's prefetch: the full batches its rate lets go in PORTAL_PACE_S
# (at least one, the rate being above 0: refilled as soon as its call's outcomes
# are acked, well before the next is due at a slow portal's rate). Not its burst: a
# portal's bucket drains from its first call on, so when the burst is spent
# changes nothing for the end of a backlog, as long as the bucket never runs
# dry; what counts is how soon each portal's first call leaves. Commands held
# beyond that wait for nothing, and at a start with a backlog the worker parses
# all it holds before the last portal's first call can leave.
PORTAL_PACE_S = 2.0
_WEBHOOK_PATH = re.compile(r"^/rest/[0-9]+/[^/]+/?$")


class ConfigError(Exception):
    """The configuration cannot work; the message says what to change."""


class PortalConfig(BaseModel):
    """One entry of B24_PORTALS: credentials, and the limits that differ from the B24_* ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: SecretStr | None = None
    portal_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    rate_burst: Annotated[int, Field(ge=1)] | None = None
    rate_reserve: Annotated[int, Field(ge=0)] | None = None
    operating_limit_s: Annotated[float, Field(gt=0)] | None = None
    operating_window_s: Annotated[float, Field(gt=0)] | None = None
    # The portal's own stable id (auth[member_id] of its install event): messages may
    # name the portal by it as well as by its key.
    member_id: str | None = None


@dataclass(frozen=True)
class Portal:
    """A portal the worker serves, every value resolved; ``key`` is what messages name it by."""

    key: str
    webhook_url: SecretStr | None
    portal_url: str | None
    client_id: str | None
    client_secret: SecretStr | None
    refresh_token: SecretStr | None
    rate_per_second: float
    rate_burst: int
    rate_reserve: int
    operating_limit_s: float
    operating_window_s: float
    member_id: str | None = None

    @property
    def identity(self) -> str:
        """What the portal's limits and field definitions are kept under: its member_id,
        which stays when its domain changes, or else its host."""
        return self.member_id or self.host

    @property
    def host(self) -> str:
        """The portal's host name: what its limits belong to, whatever key names it."""
        url = self.webhook_url.get_secret_value() if self.webhook_url else self.portal_url
        return (urlsplit(url or "").netloc or self.key).lower()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=True, frozen=True
    )

    # Broker
    AMQP_URL: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description=(
            "the broker; a RabbitMQ cluster as its nodes' URLs, comma-separated (the next "
            'node at every reconnect: docs/operations.md, "A RabbitMQ cluster")'
        ),
    )
    UPDATE_QUEUE: str = Field(default=DEFAULT_UPDATE_QUEUE, description="commands")
    RESULT_QUEUE: str = Field(
        default=DEFAULT_RESULT_QUEUE, description="success events without `reply_to`"
    )
    DEAD_LETTER_QUEUE: str = Field(default=DEFAULT_DEAD_LETTER_QUEUE, description="failure events")
    PREFETCH: Annotated[int, Field(ge=1, le=5000)] = Field(
        default=300, description="unacknowledged deliveries held at most"
    )
    MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=100)] = Field(
        default=5, description="tries of a transiently failing command, the first included"
    )
    MAX_MESSAGE_BYTES: Annotated[int, Field(ge=1024)] = Field(
        default=1_048_576, description="larger bodies are validation failures"
    )

    # Portal: a webhook, or an OAuth application
    B24_WEBHOOK_URL: SecretStr | None = Field(
        default=None, description="`https://<portal>/rest/<user_id>/<code>/`"
    )
    B24_PORTAL_URL: str | None = Field(default=None, description="`https://<portal>`, for OAuth")
    B24_CLIENT_ID: str | None = Field(default=None, description="OAuth application id")
    B24_CLIENT_SECRET: SecretStr | None = Field(
        default=None, description="OAuth application secret"
    )
    B24_REFRESH_TOKEN: SecretStr | None = Field(default=None, description="the first refresh token")
    B24_OAUTH_TOKEN_URL: str = Field(
        default="https://oauth.bitrix.info/oauth/token/",
        description="where OAuth tokens are refreshed",
    )
    B24_TOKEN_FILE: str = Field(
        default="b24-oauth-token.json",
        description="where the rotated refresh token is kept (Redis when `LIMITER_URL` is set)",
    )
    B24_TOKEN_RENEW_DAYS: Annotated[float, Field(gt=0, le=27)] = Field(
        default=14.0,
        description=(
            "an OAuth refresh token older than this is renewed, used or not (checked hourly):"
            " the cloud lets an idle portal's lapse after 28 days; a failed renewal sets "
            "`b24_token_renewal_failed{portal}`"
        ),
    )
    B24_TIMEOUT_S: Annotated[float, Field(gt=0, le=120)] = Field(
        default=70.0, description="HTTP read timeout (the portal cuts a request off at 60 s)"
    )
    B24_READ_BACK_AFTER_S: Annotated[float, Field(ge=0, le=600)] = Field(
        default=60.0,
        description=(
            "a command adding fm values whose answer was lost is read back this long after "
            "(when the original request can no longer be running): its values there and not "
            "there before, a success marked `verifiedByReadBack`; none there, sent once more;"
            " otherwise `in_doubt`. Such commands cost one more request per call: their items"
            " are read just before it. `0`: no reading, they end `in_doubt` at once"
        ),
    )
    B24_ALLOW_HTTP: bool = Field(
        default=False,
        description="allow plain http to a host that is not loopback",
    )

    # Pacing: the portal's limits
    B24_RATE_PER_SECOND: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="requests the portal's bucket drains per second"
    )
    B24_RATE_BURST: Annotated[int, Field(ge=1)] = Field(
        default=50, description="requests the portal's bucket holds"
    )
    B24_OPERATING_LIMIT_S: Annotated[float, Field(gt=0)] = Field(
        default=480.0, description="server seconds one method may use per window"
    )
    B24_OPERATING_WINDOW_S: Annotated[float, Field(gt=0)] = Field(
        default=600.0, description="the operating-time window"
    )
    B24_RATE_RESERVE: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="bucket requests left unused for other integrations on the same portal",
    )
    BATCH_SIZE: Annotated[int, Field(ge=1, le=50)] = Field(
        default=50, description="commands per `batch` call; `1` disables batch"
    )
    BATCH_LINGER_MS: Annotated[float, Field(ge=0, le=1000)] = Field(
        default=50.0,
        description=(
            "how long a batch that is not full waits for its next command; while commands "
            "keep coming, or its portal's queue has a backlog, it fills for up to 20 times "
            "that (a lone command waits this long at most). A portal allowing under one "
            "request a second per 20 lingers waits a twentieth of its request interval "
            "instead (0.5 s at 0.1 requests/s)"
        ),
    )
    COALESCE: Literal["off", "safe"] = Field(
        default="off",
        description=(
            "`safe`: the commands of one item that wait in the worker behind its command in "
            "flight ride in that command's call, their fields merged (the later value wins; "
            "each still gets its own event, with `coalescedWith` and `superseded`); never "
            "merged: fm values, files, a different `useOriginalUfNames`, and stage moves "
            "(`stageId`, `categoryId`) to different values. The portal then saves the item "
            "once, so its robots and business processes run once for the merged change "
            '(docs/operations.md, "Coalescing"). `off`: one command per call\'s command'
        ),
    )
    RETRY_DELAYS_S: Annotated[
        tuple[Annotated[int, Field(ge=1, le=86_400)], ...],
        NoDecode,
        Field(min_length=1, max_length=20),
    ] = Field(
        default=(5, 30, 120, 600),
        description="delay tiers for transient failures, in seconds, comma-separated",
    )
    LIMITER_URL: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Redis (`redis://...`) shared by replicas: each portal's request bucket and "
            "operating budget, its field definitions and the OAuth refresh token are kept "
            "there; empty: in-process state and `B24_TOKEN_FILE` (one replica)"
        ),
    )

    # Several portals, several replicas
    B24_PORTALS: dict[str, PortalConfig] = Field(
        default_factory=dict,
        description=(
            'more portals, as a JSON object `{"<key>": {"webhook_url": "https://..."}}` (or '
            "the four OAuth fields), each with optional `rate_per_second`, `rate_burst`, "
            "`rate_reserve`, `operating_limit_s`, `operating_window_s`, and `member_id` (a "
            "second name); a message names its portal in the `x-b24-portal` header"
        ),
    )
    B24_PORTALS_FILE: str = Field(
        default="",
        description=(
            "the same object from a file, JSON (`.json`) or TOML (`.toml`), for more portals "
            "than one environment variable holds (Linux caps one at 128 KiB); not together "
            "with `B24_PORTALS`"
        ),
    )
    B24_PORTAL_KEY: str = Field(
        default="default",
        description="the key of the portal set by `B24_WEBHOOK_URL` or the OAuth variables",
    )
    B24_DEFAULT_PORTAL: str = Field(
        default="default", description="the portal of a message without an `x-b24-portal` header"
    )
    SHARDS: Annotated[int, Field(ge=0, le=256)] = Field(
        default=0,
        description=(
            "shard queues behind a consistent-hash exchange, so replicas keep each item's "
            "order; `0`: one queue"
        ),
    )
    PORTAL_QUEUES: bool = Field(
        default=True,
        description=(
            "with `B24_PORTALS` (and `SHARDS=0`): a queue per portal behind the headers "
            'exchange `UPDATE_QUEUE`, so no portal waits for another (see "Many portals")'
        ),
    )
    PORTAL_PREFETCH: Annotated[int, Field(ge=0, le=5000)] = Field(
        default=0,
        description=(
            "deliveries of one portal's queue a worker holds at most; `0`: sized to the "
            "portal's pace (the full batches its rate lets go in 2 s, at least one; the burst"
            " is spent as calls come back)"
        ),
    )

    PORTAL_CONNECTIONS: Annotated[int, Field(ge=0, le=64)] = Field(
        default=16,
        description=(
            "AMQP connections, besides the main one, the portal queues holding more than "
            "one batch are consumed over, so that no portal's first deliveries wait behind "
            "another's in one stream; `0`: all over the main connection"
        ),
    )
    LANE_IDLE_S: Annotated[float, Field(ge=0)] = Field(
        default=900.0,
        description=(
            "a portal's lane (its HTTP connections, limiter, pipeline and series) is built at "
            "its first command and dropped once it has had nothing to do this long; without "
            "LIMITER_URL, at least the portal's operating window and the time its bucket "
            "takes to drain; `0`: never dropped"
        ),
    )
    PORTAL_BALANCE_S: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=10.0,
        description=(
            "how often a worker compares the portal queues with commands waiting that it is "
            "the active consumer of with its share (those queues divided by the workers on "
            "the poison queue) and hands those above it to the next worker in line; `0`: never"
        ),
    )

    # Portals registered at run time (`b24-worker portals`)
    REGISTRY_PATH: str = Field(
        default="b24-portals.sqlite3",
        description=(
            "the registry of portals (`b24-worker portals`) of a worker without "
            "`LIMITER_URL`, and its bulk jobs (`b24-worker jobs`); with it, both are in that "
            "Redis"
        ),
    )
    REGISTRY_KEY: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Fernet key(s) the registry seals its secrets under, comma-separated: the first "
            "seals, any opens (`b24-worker portals keygen` makes one)"
        ),
    )

    # Bulk jobs (`b24-worker jobs`)
    JOB_RETENTION_DAYS: Annotated[float, Field(gt=0)] = Field(
        default=7,
        description=(
            "a bulk job, its counts and each command's result are kept this long after its "
            "last activity, then forgotten (checked hourly)"
        ),
    )

    # A Marketplace application's install and uninstall events
    INSTALL_PORT: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=0,
        description=(
            "the application's event handler (`ONAPPINSTALL`, `ONAPPUNINSTALL`) on its own "
            "port, facing the internet; `0` disables. Needs `REGISTRY_KEY` and the two below"
        ),
    )
    B24_APP_CLIENT_ID: str | None = Field(
        default=None,
        description="the Marketplace application's client id: every installed portal's",
    )
    B24_APP_CLIENT_SECRET: SecretStr | None = Field(
        default=None, description="the Marketplace application's client secret"
    )

    # Operations
    HTTP_PORT: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=8080, description="`/metrics`, `/healthz`, `/readyz`, `/status`; `0` disables"
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="`DEBUG`, `INFO`, `WARNING`, `ERROR`"
    )
    LOG_FORMAT: Literal["json", "console"] = Field(
        default="json", description="`json` (one object per line) or `console`"
    )
    DRAIN_TIMEOUT_S: Annotated[float, Field(ge=0)] = Field(
        default=30.0, description="on SIGTERM, time to finish what is in flight"
    )

    @field_validator("RETRY_DELAYS_S", mode="before")
    @classmethod
    def _delays(cls, value: Any) -> Any:
        """Comma-separated whole seconds, such as 5,30,120,600."""
        if not isinstance(value, str):
            return value
        parts = [part.strip() for part in value.split(",")]
        for part in parts:
            if not part.isdigit():
                raise ValueError(
                    f"{part!r} is not a whole number of seconds: give the delays "
                    "comma-separated, such as 5,30,120,600"
                )
        return tuple(int(part) for part in parts)

    @model_validator(mode="before")
    @classmethod
    def _portals_file(cls, data: Any) -> Any:
        """B24_PORTALS_FILE read into B24_PORTALS (setting both is refused)."""
        if not isinstance(data, dict) or not data.get("B24_PORTALS_FILE"):
            return data
        if data.get("B24_PORTALS"):
            raise ValueError("set B24_PORTALS or B24_PORTALS_FILE, not both")
        return {**data, "B24_PORTALS": read_portals_file(str(data["B24_PORTALS_FILE"]))}

    @model_validator(mode="after")
    def _broker(self) -> Settings:
        split_nodes(self.AMQP_URL.get_secret_value())
        return self

    @model_validator(mode="after")
    def _one_portal(self) -> Settings:
        oauth = [
            self.B24_PORTAL_URL,
            self.B24_CLIENT_ID,
            self.B24_CLIENT_SECRET,
            self.B24_REFRESH_TOKEN,
        ]
        if self.B24_WEBHOOK_URL is not None and any(oauth):
            raise ValueError(
                "set either B24_WEBHOOK_URL or the OAuth variables (B24_PORTAL_URL, "
                "B24_CLIENT_ID, B24_CLIENT_SECRET, B24_REFRESH_TOKEN), not both"
            )
        if any(oauth) and not all(oauth):
            raise ValueError(
                "OAuth needs all of B24_PORTAL_URL, B24_CLIENT_ID, B24_CLIENT_SECRET "
                "and B24_REFRESH_TOKEN"
            )
        if self.B24_WEBHOOK_URL is not None:
            _check_portal_url(
                self.B24_WEBHOOK_URL.get_secret_value(),
                "B24_WEBHOOK_URL",
                allow_http=self.B24_ALLOW_HTTP,
                webhook=True,
            )
        if self.B24_PORTAL_URL is not None:
            _check_portal_url(
                self.B24_PORTAL_URL,
                "B24_PORTAL_URL",
                allow_http=self.B24_ALLOW_HTTP,
                webhook=False,
            )
        return self

    @model_validator(mode="after")
    def _portals(self) -> Settings:
        keys = list(self.B24_PORTALS)
        if self.B24_WEBHOOK_URL is not None or self.B24_PORTAL_URL is not None:
            keys.append(self.B24_PORTAL_KEY)
        for key in keys:
            if not is_portal_key(key):
                raise ValueError(
                    f"portal key {key!r}: use 1-63 of a-z, 0-9, '_', '.', '-', starting "
                    "with a letter or digit"
                )
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"portal key {self.B24_PORTAL_KEY!r} is in B24_PORTALS and is also "
                "B24_PORTAL_KEY (the portal of B24_WEBHOOK_URL or the OAuth variables)"
            )
        for key, config in self.B24_PORTALS.items():
            check_portal_config(key, config, allow_http=self.B24_ALLOW_HTTP)
        check_member_ids(self.B24_PORTALS)
        return self

    @model_validator(mode="after")
    def _app_events(self) -> Settings:
        if not self.INSTALL_PORT:
            return self
        secret = self.B24_APP_CLIENT_SECRET
        given = {
            "REGISTRY_KEY": self.uses_registry,
            "B24_APP_CLIENT_ID": bool(self.B24_APP_CLIENT_ID),
            "B24_APP_CLIENT_SECRET": secret is not None and bool(secret.get_secret_value()),
        }
        missing = [name for name, there in given.items() if not there]
        if missing:
            raise ValueError(
                f"INSTALL_PORT needs {', '.join(missing)}: installed portals are registered "
                "with the application's credentials, their secrets sealed"
            )
        if self.INSTALL_PORT == self.HTTP_PORT:
            raise ValueError(
                "INSTALL_PORT and HTTP_PORT must differ: only the first faces the internet"
            )
        return self

    @property
    def has_portal(self) -> bool:
        """A portal is configured, or portals may be registered (or installed) at run time."""
        return (
            bool(self.B24_PORTALS)
            or self.B24_WEBHOOK_URL is not None
            or self.B24_PORTAL_URL is not None
            or self.uses_registry
        )

    def portals(self) -> dict[str, Portal]:
        """Every configured portal by key: B24_PORTALS, and the one of the B24_* variables."""
        found = {key: self.portal(key, c) for key, c in self.B24_PORTALS.items()}
        if self.B24_WEBHOOK_URL is not None or self.B24_PORTAL_URL is not None:
            found[self.B24_PORTAL_KEY] = self._portal(
                self.B24_PORTAL_KEY,
                webhook_url=self.B24_WEBHOOK_URL,
                portal_url=self.B24_PORTAL_URL,
                client_id=self.B24_CLIENT_ID,
                client_secret=self.B24_CLIENT_SECRET,
                refresh_token=self.B24_REFRESH_TOKEN,
            )
        return found

    def portal(self, key: str, c: PortalConfig) -> Portal:
        """The portal of a B24_PORTALS entry (or a registered one), every value resolved."""
        return self._portal(
            key,
            webhook_url=c.webhook_url,
            portal_url=c.portal_url,
            client_id=c.client_id,
            client_secret=c.client_secret,
            refresh_token=c.refresh_token,
            rate_per_second=c.rate_per_second,
            rate_burst=c.rate_burst,
            rate_reserve=c.rate_reserve,
            operating_limit_s=c.operating_limit_s,
            operating_window_s=c.operating_window_s,
            member_id=c.member_id,
        )

    def _portal(
        self,
        key: str,
        *,
        webhook_url: SecretStr | None,
        portal_url: str | None,
        client_id: str | None,
        client_secret: SecretStr | None,
        refresh_token: SecretStr | None,
        rate_per_second: float | None = None,
        rate_burst: int | None = None,
        rate_reserve: int | None = None,
        operating_limit_s: float | None = None,
        operating_window_s: float | None = None,
        member_id: str | None = None,
    ) -> Portal:
        return Portal(
            key=key,
            webhook_url=webhook_url,
            portal_url=portal_url,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            rate_per_second=rate_per_second or self.B24_RATE_PER_SECOND,
            rate_burst=rate_burst or self.B24_RATE_BURST,
            rate_reserve=self.B24_RATE_RESERVE if rate_reserve is None else rate_reserve,
            operating_limit_s=operating_limit_s or self.B24_OPERATING_LIMIT_S,
            operating_window_s=operating_window_s or self.B24_OPERATING_WINDOW_S,
            member_id=member_id,
        )

    def topology(self) -> Topology:
        """The queues the worker declares and uses, as these settings name them."""
        return Topology(
            update_queue=self.UPDATE_QUEUE,
            result_queue=self.RESULT_QUEUE,
            dead_letter_queue=self.DEAD_LETTER_QUEUE,
            retry_delays_s=self.RETRY_DELAYS_S,
            shards=self.SHARDS,
            portals=tuple(sorted(self.portals())) if self.portal_queues else (),
            by_portal=self.portal_queues,
            aliases=tuple(sorted(member_ids(self.B24_PORTALS).items()))
            if self.portal_queues
            else (),
        )

    @property
    def portal_queues(self) -> bool:
        """Each portal has a queue of its own: several portals (B24_PORTALS, or the
        registry's, which come and go at run time), PORTAL_QUEUES, no SHARDS."""
        several = bool(self.B24_PORTALS) or self.uses_registry
        return self.PORTAL_QUEUES and several and not self.SHARDS

    @property
    def uses_registry(self) -> bool:
        """Portals may be registered at run time: REGISTRY_KEY is set."""
        return bool(self.REGISTRY_KEY.get_secret_value().strip())

    def portal_prefetch(self, portal: Portal) -> int:
        """Deliveries of ``portal``'s queue held at most: PORTAL_PREFETCH, or its pace's.

        Enough for a full batch each time the portal's rate lets a call go over
        the next 2 s, and at least one; no more, so the rest waits on the broker,
        where it holds no other portal back. The burst is spent as calls come
        back, a few at a time, instead of all at the start.
        """
        if self.PORTAL_PREFETCH:
            return self.PORTAL_PREFETCH
        calls = math.ceil(portal.rate_per_second * PORTAL_PACE_S)
        return min(5000, calls * self.BATCH_SIZE)

    def secrets(self) -> list[str]:
        """Every secret string the settings hold, for the log mask."""
        found = []
        urls = [*self.AMQP_URL.get_secret_value().split(","), self.LIMITER_URL.get_secret_value()]
        for url in urls:
            password = urlsplit(url.strip()).password
            if password:
                found.append(password)
        found += [key.strip() for key in self.REGISTRY_KEY.get_secret_value().split(",")]
        if self.B24_APP_CLIENT_SECRET is not None:
            found.append(self.B24_APP_CLIENT_SECRET.get_secret_value())
        for portal in self.portals().values():
            found += portal_secrets(portal)
        return found

    def describe(self) -> dict[str, object]:
        """The settings with every secret redacted, for the start-up log line."""
        shown: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in ("AMQP_URL", "B24_WEBHOOK_URL", "LIMITER_URL") and value is not None:
                url = value.get_secret_value()
                shown[name] = redact_url(url) if url else ""
            elif name == "B24_PORTALS":
                shown[name] = {key: _describe_portal(c) for key, c in value.items()}
            elif isinstance(value, SecretStr):
                shown[name] = "***"
            else:
                shown[name] = value
        return shown


def portal_secrets(portal: Portal) -> list[str]:
    """A portal's secret strings (its webhook's code, its OAuth secrets), for the log mask."""
    found = []
    if portal.webhook_url is not None:
        parts = urlsplit(portal.webhook_url.get_secret_value()).path.split("/")
        if len(parts) > 3:
            found.append(parts[3])
    for secret in (portal.client_secret, portal.refresh_token):
        if secret is not None:
            found.append(secret.get_secret_value())
    return found


def redact_url(url: str) -> str:
    """The URL without its password or webhook code (each URL of a comma-separated list)."""
    if "," in url:
        return ",".join(redact_url(one.strip()) for one in url.split(","))
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}:***@{host}" if parts.password else f"{parts.username}@{host}"
    path = parts.path
    if parts.scheme in ("http", "https") and _WEBHOOK_PATH.match(path):
        user_id = path.split("/")[2]
        path = f"/rest/{user_id}/***/"
    return f"{parts.scheme}://{host}{path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_portal_url(url: str, name: str, *, allow_http: bool, webhook: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} must be an https:// URL")
    if webhook and not _WEBHOOK_PATH.match(parts.path):
        raise ValueError(f"{name} must look like https://<portal>/rest/<user_id>/<code>/")
    if parts.scheme == "http" and not (allow_http or _is_loopback(parts.hostname)):
        raise ValueError(
            f"{name} uses plain http to {parts.hostname}: the portal's credentials would "
            "cross the network unencrypted; use https, or set B24_ALLOW_HTTP=true to opt in"
        )


def check_portal_config(
    key: str, c: PortalConfig, *, allow_http: bool, where: str | None = None
) -> None:
    """ValueError when ``c`` cannot serve a portal; ``where`` names it (B24_PORTALS[key])."""
    oauth = [c.portal_url, c.client_id, c.client_secret, c.refresh_token]
    where = where or f"B24_PORTALS[{key}]"
    if c.webhook_url is not None and any(oauth):
        raise ValueError(f"{where}: set either webhook_url or the OAuth fields, not both")
    if c.webhook_url is None and not all(oauth):
        raise ValueError(
            f"{where}: set webhook_url, or all of portal_url, client_id, client_secret "
            "and refresh_token"
        )
    if c.webhook_url is not None:
        _check_portal_url(
            c.webhook_url.get_secret_value(),
            f"{where}.webhook_url",
            allow_http=allow_http,
            webhook=True,
        )
    if c.portal_url is not None:
        _check_portal_url(c.portal_url, f"{where}.portal_url", allow_http=allow_http, webhook=False)
    if c.member_id is not None and not is_portal_key(c.member_id):
        raise ValueError(
            f"{where}.member_id: use 1-63 of a-z, 0-9, '_', '.', '-' (a portal's member_id "
            "is 32 hexadecimal digits)"
        )


def member_ids(portals: Mapping[str, PortalConfig]) -> dict[str, str]:
    """Each portal's member_id (a second name messages may give it) and its key."""
    return {
        c.member_id: key
        for key, c in portals.items()
        if c.member_id is not None and c.member_id != key
    }


def check_member_ids(portals: Mapping[str, PortalConfig]) -> None:
    """ValueError when a member_id names two portals, or is another portal's key."""
    seen: dict[str, str] = {}
    for key, c in portals.items():
        if c.member_id is None:
            continue
        if c.member_id in seen:
            raise ValueError(
                f"portals {seen[c.member_id]} and {key} have the same member_id: one portal "
                "cannot be two"
            )
        if c.member_id in portals and c.member_id != key:
            raise ValueError(f"portal {key}: its member_id is the key of portal {c.member_id}")
        seen[c.member_id] = key


def _describe_portal(c: PortalConfig) -> dict[str, object]:
    shown: dict[str, object] = {}
    for name, value in c:
        if value is None:
            continue
        if name == "webhook_url":
            shown[name] = redact_url(value.get_secret_value())
        elif isinstance(value, SecretStr):
            shown[name] = "***"
        else:
            shown[name] = value
    return shown


def read_portals_file(path: str) -> dict[str, Any]:
    """The portals object of a JSON (.json) or TOML (.toml) file; ValueError naming the
    file and what is wrong, never its content (it holds credentials)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ValueError(f"B24_PORTALS_FILE {path}: name a .json or a .toml file")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"B24_PORTALS_FILE {path}: cannot read it ({exc.strerror})") from None
    try:
        loaded = tomllib.loads(raw.decode()) if suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        kind = "TOML" if suffix == ".toml" else "JSON"
        raise ValueError(f"B24_PORTALS_FILE {path}: not valid {kind}{where}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"B24_PORTALS_FILE {path}: expected an object of portals by key")
    return loaded


def reference() -> list[tuple[str, str, str]]:
    """Every setting as README's table and `b24-worker run --help` show it: its name,
    its default and its meaning, read from the model itself."""
    rows = []
    for name, info in Settings.model_fields.items():
        secret = SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))
        meaning = (info.description or "") + (" (secret)" if secret else "")
        rows.append((name, _default_text(info.get_default(call_default_factory=True)), meaning))
    return rows


def _default_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    match value:
        case None:
            return "-"
        case "" | {}:
            return "empty"
        case bool():
            return str(value).lower()
        case float() if value.is_integer():
            return str(int(value))
        case tuple():
            return ",".join(str(part) for part in value)
        case _:
            return str(value)


def reference_markdown() -> str:
    """README's configuration table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, meaning in reference():
        shown = "-" if default == "-" else "empty" if default == "empty" else f"`{default}`"
        lines.append(f"| `{name}` | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


def reference_text(width: int = 100) -> str:
    """The settings for `b24-worker run --help`: each name, its default, its meaning."""
    out = [
        "settings (environment variables; also read from a .env file in the working",
        "directory, or ENV_FILE's, where a variable set in the environment wins):",
    ]
    for name, default, meaning in reference():
        out.append(f"  {name} (default: {default})")
        out += textwrap.wrap(
            meaning.replace("`", ""),
            width,
            initial_indent="      ",
            subsequent_indent="      ",
            break_on_hyphens=False,
        )
    return "\n".join(out)


def env_file() -> Path | None:
    """The .env file read under the environment: ENV_FILE's path, or ``.env`` in the
    working directory; none when ENV_FILE is set empty or the file is not there."""
    path = Path(os.environ.get("ENV_FILE", ".env"))
    return path if str(path) not in ("", ".") and path.is_file() else None


def load_settings() -> Settings:
    """Read the environment, and a .env file when there is one (`env_file`; a variable
    set in the environment wins); raise ConfigError with every problem, secrets left out."""
    found = env_file()
    if found is None and os.environ.get("ENV_FILE"):
        raise ConfigError(f"ENV_FILE {os.environ['ENV_FILE']}: no such file")
    try:
        return Settings(_env_file=found)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where else message)
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
    except SettingsError as exc:
        # A value that is not JSON where JSON is needed (B24_PORTALS); its text is not shown.
        raise ConfigError(f"invalid configuration: {exc}; it must be a JSON object") from None
