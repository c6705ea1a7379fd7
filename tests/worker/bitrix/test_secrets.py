"""No webhook code, token or client secret in any error's text, repr or printed traceback."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.worker.bitrix.fakes import WEBHOOK_CODE, WEBHOOK_URL, ScriptedPortal, error
from tests.worker.bitrix.oauthfake import (
    CLIENT_SECRET,
    FIRST_REFRESH,
    MemoryStore,
    OAuthPortal,
)
from worker.bitrix import (
    BitrixClient,
    BitrixError,
    FileTokenStore,
    StoredToken,
    WebhookAuth,
)

SECRETS = (WEBHOOK_CODE, CLIENT_SECRET, FIRST_REFRESH, "accesstoken", "refreshtoken0")


def _leaky(request: httpx.Request) -> Exception:
    """httpx-like errors whose own text holds the whole request, URL and body."""
    return httpx.ReadTimeout(f"timed out: {request.url} {request.content!r}", request=request)


def _webhook(answer: Callable[[httpx.Request], object]) -> BitrixClient:
    def respond(request: httpx.Request) -> httpx.Response:
        result = answer(request)
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, httpx.Response)
        return result

    http = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    return BitrixClient(http=http, auth=WebhookAuth(WEBHOOK_URL))


async def _webhook_read_timeout() -> object:
    return await _webhook(_leaky).call("crm.item.update", {"id": 1})


async def _webhook_connect_error() -> object:
    client = _webhook(lambda r: httpx.ConnectError(f"cannot connect to {r.url}", request=r))
    return await client.batch({"a": ("crm.item.update", {"id": 1})})


async def _webhook_html() -> object:
    client = _webhook(lambda r: httpx.Response(502, html=f"<p>bad gateway for {r.url}</p>"))
    return await client.call("crm.item.update", {"id": 1})


async def _webhook_no_auth() -> object:
    portal = ScriptedPortal([error(401, "NO_AUTH_FOUND", "Wrong authorization data")])
    return await BitrixClient(http=portal.client(), auth=WebhookAuth(WEBHOOK_URL)).call("x.y", {})


async def _oauth_refused() -> object:
    portal = OAuthPortal(refresh_tokens=set())
    http, auth = portal.auth(MemoryStore())
    return await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})


async def _oauth_token_endpoint_down() -> object:
    portal = OAuthPortal(token_endpoint_down=True)
    http, auth = portal.auth(MemoryStore())
    return await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})


async def _oauth_still_expired() -> object:
    portal = OAuthPortal(always_expired=True)
    http, auth = portal.auth(MemoryStore())
    return await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})


async def _oauth_call_times_out() -> object:
    portal = OAuthPortal()

    async def handler(request: httpx.Request) -> httpx.Response:
        if "oauth" in request.url.host:
            return await portal.handler(request)
        raise _leaky(request)

    http, auth = portal.auth(MemoryStore(), handler=handler)
    return await BitrixClient(http=http, auth=auth).call("crm.item.get", {"id": 1})


SCENARIOS: dict[str, Callable[[], Awaitable[object]]] = {
    "webhook read timeout": _webhook_read_timeout,
    "webhook connect error": _webhook_connect_error,
    "webhook html answer": _webhook_html,
    "webhook portal error": _webhook_no_auth,
    "oauth refresh refused": _oauth_refused,
    "oauth token endpoint down": _oauth_token_endpoint_down,
    "oauth still expired": _oauth_still_expired,
    "oauth call times out": _oauth_call_times_out,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_errors_never_show_a_secret(scenario: str) -> None:
    with pytest.raises(BitrixError) as caught:
        await SCENARIOS[scenario]()
    printed = "".join(traceback.format_exception(caught.value))
    for text in (str(caught.value), repr(caught.value), printed):
        for secret in SECRETS:
            assert secret not in text, (scenario, secret)


async def test_the_webhook_error_names_the_portal_with_the_code_masked() -> None:
    with pytest.raises(BitrixError) as caught:
        await _webhook_read_timeout()
    assert "https://portal.example/rest/7/***/" in str(caught.value)


async def test_token_store_errors_never_show_the_token(tmp_path: Path) -> None:
    token = StoredToken(refresh_token=FIRST_REFRESH, origin="o", saved_at=0.0)
    with pytest.raises(BitrixError) as caught:
        await FileTokenStore(tmp_path).save(token)
    assert FIRST_REFRESH not in "".join(traceback.format_exception(caught.value))


def test_reprs_never_show_a_secret() -> None:
    portal = OAuthPortal()
    _, auth = portal.auth(MemoryStore())
    texts = [repr(auth), repr(WebhookAuth(WEBHOOK_URL))]
    texts.append(repr(BitrixClient(http=httpx.AsyncClient(), auth=auth)))
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
