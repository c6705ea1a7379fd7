"""Webhook and OAuth authorisation: URLs, the token in the body, single-flight renewal."""

from __future__ import annotations

import asyncio
import dataclasses
import errno

import httpx
import pytest
from structlog.testing import capture_logs

import worker.bitrix.transport as transport
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
            refresh_token="refreshtoken0001",
            origin=fingerprint(FIRST_REFRESH),
            saved_at=1000.0,
            version=1,
            access_token="accesstoken0001",
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
    assert caught.value.out_of_files is False
    assert portal.calls == []


async def test_a_token_request_without_a_file_descriptor_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "_out_of_files_said_at", None)
    portal = OAuthPortal(token_endpoint_down=True, token_endpoint_errno=errno.EMFILE)
    http, auth = portal.auth(MemoryStore())
    with capture_logs() as logs, pytest.raises(NoAnswerError) as caught:
        await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert caught.value.out_of_files is True
    assert caught.value.maybe_sent is False
    assert "too many open files" in str(caught.value)
    [said] = [line for line in logs if line["event"] == "process.out_of_files"]
    assert said["where"] == TOKEN_URL
    assert CLIENT_SECRET not in repr(logs)
    assert FIRST_REFRESH not in repr(logs)


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


# Replicas: several OAuthAuth of one application sharing one store ---------------------------


async def test_replicas_seeing_one_expiry_make_one_refresh_and_share_its_access_token() -> None:
    portal, store = OAuthPortal(), MemoryStore()
    replicas = [BitrixClient(http=h, auth=a) for h, a in (portal.auth(store) for _ in range(3))]
    await asyncio.gather(*(r.call("crm.item.get", {"id": 0}) for r in replicas))
    assert len(portal.refresh_forms) == 1  # the second and third took the stored access token
    portal.expire()
    answers = await asyncio.gather(
        *(r.call("crm.item.get", {"id": i}) for i in range(10) for r in replicas)
    )
    assert {str(a.result) for a in answers} == {"{'ok': True}"}
    assert len(portal.refresh_forms) == 2  # one renewal for all three
    assert [s.version for s in store.saves] == [1, 2]
    assert store.stored is not None
    assert store.stored.access_token == portal.access


async def test_an_invalid_grant_after_another_replica_rotated_uses_the_newer_stored_token() -> None:
    portal, store = OAuthPortal(), MemoryStore()
    http, auth = portal.auth(store)
    client = BitrixClient(http=http, auth=auth)
    await client.call("crm.item.get", {"id": 0})
    portal.expire()

    async def rotated_meanwhile(request: httpx.Request) -> httpx.Response:
        if str(request.url).startswith(TOKEN_URL) and len(portal.refresh_forms) == 1:
            # Another replica, whose lock ran out, rotated the token meanwhile and saved
            # the new one: the token this request carries is dead.
            portal.refresh_tokens = {"rotatedelsewhere"}
            assert store.stored is not None
            store.stored = dataclasses.replace(
                store.stored, refresh_token="rotatedelsewhere", version=2, access_token=None
            )
        return await portal.handler(request)

    http2, auth2 = portal.auth(store, handler=rotated_meanwhile)
    answer = await BitrixClient(http=http2, auth=auth2).call("crm.item.get", {"id": 1})
    assert answer.result == {"ok": True}
    used = [form["refresh_token"] for form in portal.refresh_forms]
    assert used == [FIRST_REFRESH, "refreshtoken0001", "rotatedelsewhere"]
    assert store.stored is not None
    assert (store.stored.refresh_token, store.stored.version) == ("refreshtoken0003", 3)


async def test_a_holder_that_stalled_past_its_lock_does_not_overwrite_the_newer_token() -> None:
    portal, store = OAuthPortal(), MemoryStore()
    newer = StoredToken("savedmeanwhile", fingerprint(FIRST_REFRESH), 2000.0, version=1)

    async def stall(request: httpx.Request) -> httpx.Response:
        answer = await portal.handler(request)
        store.stored = newer  # saved by the next holder while this one stalled
        return answer

    http, auth = portal.auth(store, handler=stall)
    answer = await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert answer.result == {"ok": True}  # its own access token still works
    assert store.stored == newer
    assert [t.refresh_token for t in store.refused] == ["refreshtoken0001"]
    assert auth.lost_saves == 1


async def test_the_stored_token_refused_too_stops_with_one_request_per_token() -> None:
    stored = StoredToken("revokedtoken01", fingerprint(FIRST_REFRESH), 5.0, version=4)
    portal, store = OAuthPortal(refresh_tokens=set()), MemoryStore(stored)
    http, auth = portal.auth(store)
    with pytest.raises(TokenRenewalError, match="invalid_grant"):
        await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})
    assert [form["refresh_token"] for form in portal.refresh_forms] == ["revokedtoken01"]
    assert store.saves == []
