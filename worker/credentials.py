"""A portal's credentials as the worker and its tools use them.

`build_auth` makes the webhook, or the OAuth application whose rotated refresh
token is kept by `token_store`: in Redis when LIMITER_URL is set (replicas share
it), in a file otherwise. Every token the application receives is added to the
log mask as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from worker.bitrix import Auth, FileTokenStore, OAuthAuth, TokenStore, WebhookAuth
from worker.observability.logging import SecretMask
from worker.settings import Portal, Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["build_auth", "token_store"]


def build_auth(
    settings: Settings,
    portal: Portal | None = None,
    *,
    http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
    mask: SecretMask | None,
    redis: Redis | None = None,
) -> Auth:
    """The webhook, or the OAuth application whose tokens are masked in logs as they come.

    Without ``portal``: the one messages without a portal header go to. ``http``:
    the client OAuth renews tokens through, or what makes it (asked for OAuth only).
    """
    if portal is None:
        portal = settings.portals().get(settings.B24_DEFAULT_PORTAL)
        if portal is None:
            raise ValueError(f"no portal {settings.B24_DEFAULT_PORTAL!r} is configured")
    if portal.webhook_url is not None:
        return WebhookAuth(portal.webhook_url.get_secret_value())
    if not (
        portal.portal_url and portal.client_id and portal.client_secret and portal.refresh_token
    ):
        raise ValueError(f"portal {portal.key!r} has neither a webhook nor OAuth credentials")
    return OAuthAuth(
        http=http if isinstance(http, httpx.AsyncClient) else http(),
        portal_url=portal.portal_url,
        client_id=portal.client_id,
        client_secret=portal.client_secret.get_secret_value(),
        refresh_token=portal.refresh_token.get_secret_value(),
        token_url=settings.B24_OAUTH_TOKEN_URL,
        store=token_store(settings, portal, redis=redis),
        on_new_secret=(lambda secret: mask.add(secret)) if mask is not None else None,
    )


def token_store(
    settings: Settings, portal: Portal | None = None, *, redis: Redis | None = None
) -> TokenStore:
    """Redis when LIMITER_URL is set (replicas share the token), else a file.

    The portal of the B24_* variables keeps B24_TOKEN_FILE; any other (of
    B24_PORTALS, or registered at run time) gets that name with its key before
    the suffix.
    """
    if portal is None:
        portal = settings.portals()[settings.B24_PORTAL_KEY]
    limiter_url = settings.LIMITER_URL.get_secret_value()
    if redis is None and not limiter_url:
        path = Path(settings.B24_TOKEN_FILE)
        if portal.key in settings.B24_PORTALS or portal.key != settings.B24_PORTAL_KEY:
            path = path.with_name(f"{path.stem}.{portal.key}{path.suffix}")
        return FileTokenStore(str(path))
    # Imported here: a worker without LIMITER_URL never loads the Redis client.
    from redis.asyncio import Redis

    from worker.bitrix.redis_tokens import RedisTokenStore

    if redis is None:
        redis = Redis.from_url(limiter_url)
    # Under the portal's member_id when it has one: it stays when the domain changes,
    # and two portals on one host (a test's sandboxes) keep tokens of their own.
    origin = portal.member_id or urlsplit(portal.portal_url or "").hostname or portal.key
    return RedisTokenStore(redis, key=f"b24-worker:oauth:{origin}:{portal.client_id}")
