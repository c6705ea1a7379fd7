"""Every setting of the worker, read once from the environment.

Each variable is documented here and in README's configuration table. Secrets
(the AMQP password, the webhook code, OAuth credentials) are held as SecretStr
and never printed: `Settings.describe()` is the safe view for logs.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConfigError", "Settings", "load_settings", "redact_url"]

_WEBHOOK_PATH = re.compile(r"^/rest/[0-9]+/[^/]+/?$")


class ConfigError(Exception):
    """The configuration cannot work; the message says what to change."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=True, frozen=True
    )

    # Broker
    AMQP_URL: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ connection URL",
    )
    UPDATE_QUEUE: str = Field(default="crm.item.update", description="commands to apply")
    RESULT_QUEUE: str = Field(
        default="crm.item.update.result", description="success events without reply_to"
    )
    DEAD_LETTER_QUEUE: str = Field(default="crm.item.update.dead", description="failure events")
    PREFETCH: Annotated[int, Field(ge=1, le=5000)] = Field(
        default=300, description="unacknowledged deliveries the worker holds at most"
    )
    MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=100)] = Field(
        default=5, description="tries of a command that fails transiently, the first included"
    )
    MAX_MESSAGE_BYTES: Annotated[int, Field(ge=1024)] = Field(
        default=1_048_576, description="larger bodies are validation failures"
    )

    # Portal: a webhook, or an OAuth application
    B24_WEBHOOK_URL: SecretStr | None = Field(
        default=None, description="https://<portal>/rest/<user_id>/<code>/"
    )
    B24_PORTAL_URL: str | None = Field(default=None, description="https://<portal>, for OAuth")
    B24_CLIENT_ID: str | None = Field(default=None, description="OAuth application id")
    B24_CLIENT_SECRET: SecretStr | None = Field(default=None, description="OAuth secret")
    B24_REFRESH_TOKEN: SecretStr | None = Field(default=None, description="first refresh token")
    B24_OAUTH_TOKEN_URL: str = Field(
        default="https://oauth.bitrix.info/oauth/token/",
        description="where OAuth tokens are refreshed",
    )
    B24_TOKEN_FILE: str = Field(
        default="b24-oauth-token.json",
        description="where the rotated refresh token is kept (in Redis when LIMITER_URL is set)",
    )
    B24_TIMEOUT_S: Annotated[float, Field(gt=0, le=120)] = Field(
        default=70.0, description="HTTP read timeout; the portal cuts a request off at 60 s"
    )
    B24_ALLOW_HTTP: bool = Field(
        default=False,
        description="allow plain http to a host that is not loopback (the compose demo)",
    )

    # Pacing: the portal's limits
    B24_RATE_PER_SECOND: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="requests the portal's bucket drains per second"
    )
    B24_RATE_BURST: Annotated[int, Field(ge=1)] = Field(
        default=50, description="requests the portal's bucket holds"
    )
    B24_OPERATING_LIMIT_S: Annotated[float, Field(gt=0)] = Field(
        default=480.0, description="server seconds a method may use per window"
    )
    B24_OPERATING_WINDOW_S: Annotated[float, Field(gt=0)] = Field(
        default=600.0, description="the operating-time window"
    )
    B24_RATE_RESERVE: Annotated[int, Field(ge=0)] = Field(
        default=0, description="bucket requests left unused for other integrations on the portal"
    )
    BATCH_SIZE: Annotated[int, Field(ge=1, le=50)] = Field(
        default=50, description="commands per batch call; 1 disables batch"
    )
    BATCH_LINGER_MS: Annotated[float, Field(ge=0, le=1000)] = Field(
        default=50.0, description="how long a batch waits to fill"
    )
    RETRY_DELAYS_S: str = Field(
        default="5,30,120,600",
        description="delay tiers for transient failures, comma-separated seconds",
    )
    LIMITER_URL: SecretStr = Field(
        default=SecretStr(""), description="shared limiter (redis://...); empty: in-process"
    )

    # Operations
    HTTP_PORT: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=8080, description="/metrics, /healthz, /readyz; 0 disables"
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    LOG_FORMAT: Literal["json", "console"] = Field(default="json")
    DRAIN_TIMEOUT_S: Annotated[float, Field(ge=0)] = Field(
        default=30.0, description="on SIGTERM, time to finish what is in flight"
    )

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

    @property
    def has_portal(self) -> bool:
        return self.B24_WEBHOOK_URL is not None or self.B24_PORTAL_URL is not None

    def describe(self) -> dict[str, object]:
        """The settings with every secret redacted, for the start-up log line."""
        shown: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in ("AMQP_URL", "B24_WEBHOOK_URL", "LIMITER_URL") and value is not None:
                url = value.get_secret_value()
                shown[name] = redact_url(url) if url else ""
            elif isinstance(value, SecretStr):
                shown[name] = "***"
            else:
                shown[name] = value
        return shown


def redact_url(url: str) -> str:
    """The URL without its password or webhook code."""
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


def load_settings() -> Settings:
    """Read the environment; raise ConfigError with every problem, secrets left out."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where else message)
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
