"""An idle portal's refresh token is renewed before it lapses (28 days in the cloud)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.worker.bitrix.oauthfake import (
    FIRST_REFRESH,
    PORTAL_URL,
    TOKEN_URL,
    MemoryStore,
    OAuthPortal,
)
from worker.bitrix import OAuthAuth, StoredToken, TokenRenewalError
from worker.bitrix.tokens import fingerprint

DAY_S = 86_400.0
MAX_AGE_S = 14 * DAY_S
NOW = 100 * DAY_S


def auth_for(portal: OAuthPortal, store: MemoryStore) -> OAuthAuth:
    return portal.auth(store, now=NOW)[1]


def stored_at(saved_at: float, refresh_token: str = FIRST_REFRESH) -> StoredToken:
    return StoredToken(
        refresh_token=refresh_token,
        origin=fingerprint(FIRST_REFRESH),
        saved_at=saved_at,
        version=1,
        access_token="accesstoken-old",
    )


async def test_a_token_never_renewed_is_renewed_and_stored() -> None:
    portal, store = OAuthPortal(), MemoryStore()
    assert await auth_for(portal, store).keep_alive(MAX_AGE_S) is True
    assert len(portal.refresh_forms) == 1
    assert store.stored is not None
    assert store.stored.saved_at == NOW
    assert store.stored.refresh_token in portal.refresh_tokens


async def test_a_recent_token_is_left_alone() -> None:
    portal, store = OAuthPortal(), MemoryStore(stored=stored_at(NOW - DAY_S))
    assert await auth_for(portal, store).keep_alive(MAX_AGE_S) is False
    assert portal.refresh_forms == []


async def test_an_old_token_is_renewed_before_it_lapses() -> None:
    portal, store = OAuthPortal(), MemoryStore(stored=stored_at(NOW - 20 * DAY_S))
    auth = auth_for(portal, store)
    assert await auth.keep_alive(MAX_AGE_S) is True
    assert [form["refresh_token"] for form in portal.refresh_forms] == [FIRST_REFRESH]
    assert store.stored is not None
    assert store.stored.saved_at == NOW
    assert store.stored.version == 2
    assert await auth.token() == portal.access  # the calls use the renewed access token


async def test_a_renewal_and_calls_at_once_share_one_refresh() -> None:
    portal, store = OAuthPortal(), MemoryStore(stored=stored_at(NOW - 20 * DAY_S))
    auth = auth_for(portal, store)
    await asyncio.gather(auth.keep_alive(MAX_AGE_S), auth.refresh(None), auth.refresh(None))
    assert len(portal.refresh_forms) == 1


async def test_a_refused_renewal_is_raised() -> None:
    portal = OAuthPortal(refresh_tokens=set())  # the portal no longer knows the token
    store = MemoryStore(stored=stored_at(NOW - 20 * DAY_S))
    with pytest.raises(TokenRenewalError):
        await auth_for(portal, store).keep_alive(MAX_AGE_S)


async def moved_to(endpoint: str, portal: OAuthPortal) -> OAuthAuth:
    """An auth whose OAuth server answers that the portal is now at ``endpoint``."""

    async def handler(request: httpx.Request) -> httpx.Response:
        answer = await portal.handler(request)
        if str(request.url).startswith(TOKEN_URL) and answer.status_code == 200:
            body = {**answer.json(), "client_endpoint": endpoint}
            return httpx.Response(200, json=body)
        return answer

    return portal.auth(MemoryStore(), handler=handler, now=NOW)[1]


async def test_a_portal_whose_domain_changed_is_called_where_it_is_now() -> None:
    auth = await moved_to("https://renamed.example/rest/", OAuthPortal())
    assert auth.endpoint("crm.item.update") == PORTAL_URL + "/rest/crm.item.update"
    await auth.token()
    assert auth.endpoint("crm.item.update") == "https://renamed.example/rest/crm.item.update"
    assert auth.where == "https://renamed.example"


@pytest.mark.parametrize("endpoint", ["http://renamed.example/rest/", "not a url", ""])
async def test_a_move_to_plain_http_or_to_nowhere_is_not_followed(endpoint: str) -> None:
    auth = await moved_to(endpoint, OAuthPortal())
    await auth.token()
    assert auth.where == PORTAL_URL
