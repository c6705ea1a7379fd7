"""Who is calling: a webhook (user id and code in the path) or an OAuth access token.

A wrong webhook code or an unknown token gets 401 ``NO_AUTH_FOUND``; an
expired token 401 ``expired_token``. The operating-time limit is kept per
caller, so the identity carries a key for it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from sandbox.errors import RestError
from sandbox.state import PortalState

__all__ = ["Identity", "authenticate"]


@dataclass(frozen=True, slots=True)
class Identity:
    key: str
    user_id: int


def authenticate(
    state: PortalState, webhook: tuple[str, str] | None, params: dict[str, Any]
) -> Identity:
    """The caller of a REST request; ``webhook`` is (user_id, code) from the path, if any."""
    if state.faults.no_auth:
        raise RestError("NO_AUTH_FOUND")
    config = state.config
    if webhook is not None:
        user, code = webhook
        if user == str(config.user_id) and hmac.compare_digest(code, config.webhook_code):
            return Identity(key=f"webhook:{user}", user_id=config.user_id)
        raise RestError("NO_AUTH_FOUND")
    user_id = state.tokens.check(params.get("auth"))
    return Identity(key=f"app:{config.client_id}", user_id=user_id)
