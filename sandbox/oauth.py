"""OAuth 2.0 as a Bitrix24 application sees it: codes, access tokens that expire, refresh.

An access token lives ``access_token_ttl_s``; after that a call with it gets
401 ``expired_token`` and the application must refresh. A refresh token can
be used once (refreshing rotates it) and lives ``refresh_token_ttl_s``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.errors import RestError

__all__ = ["OAuthError", "TokenStore"]


class OAuthError(Exception):
    """A token-endpoint refusal: ``error`` as the OAuth server spells it, and the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True, slots=True)
class _Grant:
    user_id: int
    expires_at: float


class TokenStore:
    def __init__(self, config: SandboxConfig, clock: Clock, *, member_id: str) -> None:
        self._config = config
        self._clock = clock
        self._member_id = member_id
        self._codes: dict[str, _Grant] = {}
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}

    def authorize(self, user_id: int) -> str:
        """An authorization code, as the portal hands one to an installed application."""
        code = secrets.token_hex(16)
        self._codes[code] = _Grant(user_id, self._clock.time() + 30.0)
        return code

    def issue(self, user_id: int, endpoint: str) -> dict[str, Any]:
        now = self._clock.time()
        access, refresh = secrets.token_hex(24), secrets.token_hex(24)
        self._access[access] = _Grant(user_id, now + self._config.access_token_ttl_s)
        self._refresh[refresh] = _Grant(user_id, now + self._config.refresh_token_ttl_s)
        return {
            "access_token": access,
            "expires": int(now + self._config.access_token_ttl_s),
            "expires_in": int(self._config.access_token_ttl_s),
            "scope": "crm",
            "domain": endpoint.split("://", 1)[-1].split("/", 1)[0],
            "server_endpoint": f"{endpoint}/oauth/rest/",
            "status": "L",
            "client_endpoint": f"{endpoint}/rest/",
            "member_id": self._member_id,
            "user_id": user_id,
            "refresh_token": refresh,
        }

    def grant(self, params: dict[str, Any], endpoint: str) -> dict[str, Any]:
        """The token endpoint: ``authorization_code`` and ``refresh_token`` grants."""
        client_id = str(params.get("client_id", ""))
        secret = str(params.get("client_secret", ""))
        if not (
            hmac.compare_digest(client_id, self._config.client_id)
            and hmac.compare_digest(secret, self._config.client_secret)
        ):
            raise OAuthError("invalid_client", "Invalid client credentials", status=401)
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            pool, token = self._codes, str(params.get("code", ""))
        elif grant_type == "refresh_token":
            pool, token = self._refresh, str(params.get("refresh_token", ""))
        else:
            raise OAuthError("unsupported_grant_type", "Unsupported grant type")
        found = pool.pop(token, None)
        if found is None or found.expires_at <= self._clock.time():
            raise OAuthError("invalid_grant", "Invalid grant")
        return self.issue(found.user_id, endpoint)

    def check(self, token: Any) -> int:
        """The user of a valid access token; raises ``expired_token`` or ``NO_AUTH_FOUND``."""
        found = self._access.get(token) if isinstance(token, str) else None
        if found is None:
            raise RestError("NO_AUTH_FOUND")
        if found.expires_at <= self._clock.time():
            raise RestError("expired_token")
        return found.user_id

    def clear(self) -> None:
        self._codes.clear()
        self._access.clear()
        self._refresh.clear()
