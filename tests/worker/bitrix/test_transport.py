"""The portal's HTTP client: bounded waits, keep-alive HTTP/1.1 (idle connections let
go after their expiry), no redirects followed."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.worker.bitrix.fakes import WEBHOOK_URL
from tests.worker.bitrix.localserver import idle_connections, keep_alive_server
from worker.bitrix import (
    BitrixClient,
    UnexpectedAnswerError,
    WebhookAuth,
    close_expired_connections,
    make_http_client,
)

EXPIRY_S = 0.5


async def test_the_client_bounds_connecting_and_reading() -> None:
    async with make_http_client(timeout_s=70.0) as http:
        assert http.timeout == httpx.Timeout(70.0, connect=10.0)
        assert http.follow_redirects is False
    async with make_http_client(timeout_s=3.0) as http:
        assert http.timeout.connect == 3.0


async def test_sequential_calls_reuse_one_http_1_1_connection() -> None:
    async with (
        keep_alive_server() as server,
        make_http_client(timeout_s=5.0) as http,
    ):
        client = BitrixClient(http=http, auth=WebhookAuth(server.url))
        for n in range(5):
            answer = await client.call("crm.item.get", {"id": n})
            assert answer.result is True
    assert server.opened == 1
    assert server.request_lines == [b"POST /rest/1/c/crm.item.get HTTP/1.1"] * 5


async def test_a_redirect_is_not_followed_but_reported() -> None:
    def moved(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://elsewhere.example/"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(moved))
    client = BitrixClient(http=http, auth=WebhookAuth(WEBHOOK_URL))
    with pytest.raises(UnexpectedAnswerError) as caught:
        await client.call("crm.item.get", {"id": 1})
    assert caught.value.status == 301


async def test_connections_idle_past_their_expiry_are_closed_and_busy_ones_kept() -> None:
    async with idle_connections(3, expiry_s=EXPIRY_S) as (server, http, client):
        assert await close_expired_connections(http) == 0  # none expired yet
        slow = asyncio.create_task(client.call("slow", {}))  # one busy again
        await asyncio.sleep(EXPIRY_S + 0.1)
        assert await close_expired_connections(http) == 2
        async with asyncio.timeout(5.0):
            for _ in range(2):
                await server.closed.get()  # the server saw them closed
        server.release.set()
        answer = await slow  # the busy connection was left alone
        assert answer.result is True
        assert server.closed.empty()
        assert server.opened == 3
