"""OAuth against the sandbox: expiring access tokens renewed once, rotation kept across restarts."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from sandbox.clock import ManualClock
from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from worker.bitrix import (
    BitrixClient,
    FileTokenStore,
    OAuthAuth,
    PortalError,
    TokenRenewalError,
    make_http_client,
)

pytestmark = pytest.mark.sandbox

CONFIG = SandboxConfig(seed_items=5, limits_enabled=False, access_token_ttl_s=60.0)


def _auth(
    portal: RunningSandbox, http: httpx.AsyncClient, refresh_token: str, store: FileTokenStore
) -> OAuthAuth:
    return OAuthAuth(
        http=http,
        portal_url=portal.base_url,
        client_id=CONFIG.client_id,
        client_secret=CONFIG.client_secret,
        refresh_token=refresh_token,
        token_url=portal.token_url,
        store=store,
    )


async def _first_refresh_token(portal: RunningSandbox) -> str:
    async with make_http_client(timeout_s=5.0) as http:
        response = await http.post(portal.control_url + "/oauth/tokens")
        token: str = response.json()["refresh_token"]
        return token


async def test_an_expired_token_is_renewed_once_for_many_calls_and_kept_for_a_restart(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    path = tmp_path / "token.json"
    async with running_sandbox(CONFIG, clock=clock) as portal:
        configured = await _first_refresh_token(portal)
        token_requests: list[str] = []

        async def count(request: httpx.Request) -> None:
            if str(request.url).startswith(portal.token_url):
                token_requests.append(request.method)

        async with make_http_client(timeout_s=5.0) as http:
            http.event_hooks["request"].append(count)
            client = BitrixClient(
                http=http, auth=_auth(portal, http, configured, FileTokenStore(path))
            )
            first = await client.call("crm.item.get", {"entityTypeId": 2, "id": 1})
            assert first.result["item"]["id"] == 1
            assert len(token_requests) == 1

            clock.advance(120.0)  # the access token is now expired
            answers = await asyncio.gather(
                *(
                    client.call("crm.item.get", {"entityTypeId": 2, "id": 1 + n % 5})
                    for n in range(20)
                )
            )
            assert [a.result["item"]["id"] for a in answers] == [1 + n % 5 for n in range(20)]
            assert token_requests == ["POST", "POST"]

        stored = json.loads(path.read_text())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stored["refresh_token"] != configured

        # A restart with the same configuration: the configured refresh token has been
        # used up, so only the persisted one can give access.
        async with make_http_client(timeout_s=5.0) as http:
            again = BitrixClient(
                http=http, auth=_auth(portal, http, configured, FileTokenStore(path))
            )
            answer = await again.call("crm.item.get", {"entityTypeId": 2, "id": 2})
            assert answer.result["item"]["id"] == 2

        # Without the file, the used-up configured token is refused.
        async with make_http_client(timeout_s=5.0) as http:
            lost = BitrixClient(
                http=http, auth=_auth(portal, http, configured, FileTokenStore(tmp_path / "none"))
            )
            with pytest.raises(TokenRenewalError, match="invalid_grant"):
                await lost.call("crm.item.get", {"entityTypeId": 2, "id": 2})


async def test_an_unknown_access_token_is_no_auth_found_not_a_renewal(tmp_path: Path) -> None:
    async with running_sandbox(CONFIG) as portal:
        configured = await _first_refresh_token(portal)
        async with make_http_client(timeout_s=5.0) as http:
            auth = _auth(portal, http, configured, FileTokenStore(tmp_path / "t.json"))
            client = BitrixClient(http=http, auth=auth)
            await client.call("crm.item.get", {"entityTypeId": 2, "id": 1})
            reset = await http.post(portal.control_url + "/reset", json={})  # forgets all tokens
            assert reset.status_code == 200
            with pytest.raises(PortalError) as caught:
                await client.call("crm.item.get", {"entityTypeId": 2, "id": 1})
            assert (caught.value.code, caught.value.status) == ("NO_AUTH_FOUND", 401)
            assert auth.refreshes == 1
