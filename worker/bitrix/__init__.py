"""The worker's Bitrix24 client: JSON calls and ``batch`` calls, webhook or OAuth.

Modules: ``client`` (``BitrixClient``), ``answers`` (what came back),
``errors`` (the exception tree), ``encoding`` (batch query strings and what
cannot go in one), ``auth`` and ``tokens`` (credentials and the persisted
refresh token), ``transport`` (the httpx client), ``envelope`` (parsing).
"""

from worker.bitrix.answers import BatchAnswer, CommandAnswer, CommandError, TimeInfo
from worker.bitrix.auth import Auth, OAuthAuth, WebhookAuth
from worker.bitrix.client import BitrixClient
from worker.bitrix.encoding import batch_blocker, php_query
from worker.bitrix.errors import (
    BitrixError,
    NoAnswerError,
    PortalError,
    TokenRenewalError,
    UnexpectedAnswerError,
)
from worker.bitrix.tokens import FileTokenStore, StoredToken, TokenStore
from worker.bitrix.transport import KEEPALIVE_EXPIRY_S, close_expired_connections, make_http_client

__all__ = [
    "KEEPALIVE_EXPIRY_S",
    "Auth",
    "BatchAnswer",
    "BitrixClient",
    "BitrixError",
    "CommandAnswer",
    "CommandError",
    "FileTokenStore",
    "NoAnswerError",
    "OAuthAuth",
    "PortalError",
    "StoredToken",
    "TimeInfo",
    "TokenRenewalError",
    "TokenStore",
    "UnexpectedAnswerError",
    "WebhookAuth",
    "batch_blocker",
    "close_expired_connections",
    "make_http_client",
    "php_query",
]
