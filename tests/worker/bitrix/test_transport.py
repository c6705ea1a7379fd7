"""The portal's HTTP client: bounded waits, keep-alive HTTP/1.1, no redirects followed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.worker.bitrix.fakes import WEBHOOK_URL
from worker.bitrix import BitrixClient, UnexpectedAnswerError, WebhookAuth, make_http_client

_BODY = json.dumps({"result": True, "time": {"operating": 0}}).encode()


async def test_the_client_bounds_connecting_and_reading() -> None:
    async with make_http_client(timeout_s=70.0) as http:
        assert http.timeout == httpx.Timeout(70.0, connect=10.0)
        assert http.follow_redirects is False
    async with make_http_client(timeout_s=3.0) as http:
        assert http.timeout.connect == 3.0


async def test_sequential_calls_reuse_one_http_1_1_connection() -> None:
    connections: list[int] = []
    request_lines: list[bytes] = []

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_lines.append(head.split(b"\r\n", 1)[0])
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(_BODY)}\r\n\r\n".encode()
            + _BODY
        )
        await writer.drain()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                await respond(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with make_http_client(timeout_s=5.0) as http:
            client = BitrixClient(http=http, auth=WebhookAuth(f"http://127.0.0.1:{port}/rest/1/c/"))
            for n in range(5):
                answer = await client.call("crm.item.get", {"id": n})
                assert answer.result is True
    finally:
        server.close()
        await server.wait_closed()
    assert len(connections) == 1
    assert request_lines == [b"POST /rest/1/c/crm.item.get HTTP/1.1"] * 5


async def test_a_redirect_is_not_followed_but_reported() -> None:
    def moved(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://elsewhere.example/"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(moved))
    client = BitrixClient(http=http, auth=WebhookAuth(WEBHOOK_URL))
    with pytest.raises(UnexpectedAnswerError) as caught:
        await client.call("crm.item.get", {"id": 1})
    assert caught.value.status == 301
