"""Webhook and OAuth authorisation: URLs, the token in the body, single-flight renewal."""

from __future__ import annotations

import asyncio

import pytest

from tests.worker.bitrix.oauthfake import (
    CLIENT_ID,
    CLIENT_SECRET,
    FIRST_REFRESH,
    TOKEN_URL,
    MemoryStore,
    OAuthPortal,
)
from worker.bitrix import (
    BitrixClient,
    NoAnswerError,
    PortalError,
    StoredToken,
    TokenRenewalError,
    WebhookAuth,
)
from worker.bitrix.tokens import fingerprint


def test_webhook_auth_appends_the_method_and_describes_itself_without_the_code() -> None:
    auth = WebhookAuth("https://portal.example/rest/7/code1234")
    assert (
        auth.endpoint("crm.item.update") == "https://portal.example/rest/7/code1234/crm.item.update"
    )
    assert auth.where == "https://portal.example/rest/7/***/"
    assert "code1234" not in repr(auth)


@pytest.mark.parametrize(
    "url", ["https://portal.example/rest/", "ftp://portal.example/rest/1/x/", "not a url"]
)
def test_webhook_auth_refuses_a_url_that_is_not_a_webhook(url: str) -> None:
    with pytest.raises(ValueError, match="webhook URL") as caught:
        WebhookAuth(url)
    assert url not in str(caught.value)


async def test_the_first_call_renews_the_configured_token_and_sends_the_access_token() -> None:
    portal, store = OAuthPortal(), MemoryStore()
    seen: list[str] = []
    http, auth = portal.auth(store, seen=seen)
    answer = await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert answer.result == {"ok": True}
    assert portal.refresh_urls == [TOKEN_URL]  # secrets travel in the form body, not the URL
    assert portal.refresh_forms == [
        {
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": FIRST_REFRESH,
        }
    ]
    assert portal.calls == ["accesstoken0001"]
    assert store.saves == [
        StoredToken(
            refresh_token="refreshtoken0001", origin=fingerprint(FIRST_REFRESH), saved_at=1000.0
        )
    ]
    assert seen == ["accesstoken0001", "refreshtoken0001"]


async def test_many_calls_seeing_expired_token_at_once_share_one_refresh() -> None:
    portal, store = OAuthPortal(), MemoryStore()
    http, auth = portal.auth(store)
    client = BitrixClient(http=http, auth=auth)
    await client.call("crm.item.get", {"id": 0})
    portal.expire()
    answers = await asyncio.gather(*(client.call("crm.item.get", {"id": i}) for i in range(25)))
    assert [a.result for a in answers] == [{"ok": True}] * 25
    assert len(portal.refresh_forms) == 2  # the first token, then exactly one renewal
    assert auth.refreshes == 2
    assert portal.calls.count("accesstoken0002") == 25
    assert store.stored is not None
    assert store.stored.refresh_token == "refreshtoken0002"


async def test_a_token_still_expired_after_renewal_is_raised_not_renewed_again() -> None:
    portal, store = OAuthPortal(always_expired=True), MemoryStore()
    http, auth = portal.auth(store)
    with pytest.raises(PortalError) as caught:
        await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert (caught.value.code, caught.value.status) == ("expired_token", 401)
    assert len(portal.refresh_forms) == 2
    assert len(portal.calls) == 2


async def test_a_refused_refresh_fails_every_waiting_call_with_one_request() -> None:
    portal, store = OAuthPortal(refresh_tokens=set()), MemoryStore()
    http, auth = portal.auth(store)
    client = BitrixClient(http=http, auth=auth)
    results = await asyncio.gather(
        *(client.call("crm.item.get", {"id": i}) for i in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, TokenRenewalError) for r in results)
    assert "invalid_grant" in str(results[0])
    assert len(portal.refresh_forms) == 1
    assert portal.calls == []
    assert store.saves == []


async def test_an_unreachable_token_endpoint_is_no_answer_and_the_call_was_not_sent() -> None:
    portal, store = OAuthPortal(token_endpoint_down=True), MemoryStore()
    http, auth = portal.auth(store)
    with pytest.raises(NoAnswerError) as caught:
        await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert caught.value.maybe_sent is False
    assert portal.calls == []


async def test_a_stored_token_of_the_same_lineage_wins_over_the_configured_one() -> None:
    portal = OAuthPortal(refresh_tokens={"rotatedlater01"})
    store = MemoryStore(StoredToken("rotatedlater01", fingerprint(FIRST_REFRESH), 5.0))
    http, auth = portal.auth(store)
    await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert portal.refresh_forms[0]["refresh_token"] == "rotatedlater01"


async def test_a_newly_configured_token_replaces_a_stored_one_of_another_lineage() -> None:
    portal = OAuthPortal(refresh_tokens={"freshinstall01"})
    store = MemoryStore(StoredToken("rotatedlater01", fingerprint(FIRST_REFRESH), 5.0))
    http, auth = portal.auth(store, refresh="freshinstall01")
    await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert portal.refresh_forms[0]["refresh_token"] == "freshinstall01"
    assert store.stored is not None
    assert store.stored.origin == fingerprint("freshinstall01")


async def test_a_cancelled_caller_does_not_cancel_the_refresh_others_wait_for() -> None:
    portal, store = OAuthPortal(), MemoryStore()
    http, auth = portal.auth(store)
    client = BitrixClient(http=http, auth=auth)
    first = asyncio.ensure_future(client.call("crm.item.get", {"id": 1}))
    second = asyncio.ensure_future(client.call("crm.item.get", {"id": 2}))
    await asyncio.sleep(0.001)
    first.cancel()
    answer = await second
    assert answer.result == {"ok": True}
    assert first.cancelled()
    assert len(portal.refresh_forms) == 1
