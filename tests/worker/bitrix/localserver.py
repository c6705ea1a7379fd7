"""A real HTTP/1.1 server on loopback that keeps connections alive and tells what
its clients did with them: the request lines, the connections opened and closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from worker.bitrix import BitrixClient, WebhookAuth, make_http_client

BODY = json.dumps({"result": True, "time": {"operating": 0}}).encode()


@dataclass
class KeepAliveServer:
    """Answers every POST with a Bitrix24 envelope; a call of the method ``slow`` is
    answered once ``release`` is set."""

    request_lines: list[bytes] = field(default_factory=list)
    opened: int = 0
    closed: asyncio.Queue[int] = field(default_factory=asyncio.Queue)  # one per closed one
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""  # a webhook URL naming this server

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                await self._respond(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.put_nowait(1)  # the client closed the connection
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0]
        self.request_lines.append(line)
        length = next(
            int(header.split(b":")[1])
            for header in head.lower().split(b"\r\n")
            if header.startswith(b"content-length:")
        )
        await reader.readexactly(length)
        if line.split(b" ")[1].endswith(b"/slow"):
            await self.release.wait()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
            + BODY
        )
        await writer.drain()


@asynccontextmanager
async def keep_alive_server() -> AsyncIterator[KeepAliveServer]:
    state = KeepAliveServer()
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/rest/1/c/"
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def idle_connections(
    count: int, *, expiry_s: float
) -> AsyncIterator[tuple[KeepAliveServer, httpx.AsyncClient, BitrixClient]]:
    """The worker's HTTP client (keep-alive expiry ``expiry_s``) and a client over it,
    holding ``count`` idle connections to a keep-alive server: ``count`` calls were
    made at once and answered."""
    async with (
        keep_alive_server() as server,
        make_http_client(timeout_s=5.0, keepalive_expiry_s=expiry_s) as http,
    ):
        client = BitrixClient(http=http, auth=WebhookAuth(server.url))
        await asyncio.gather(*(client.call("crm.item.get", {"id": n}) for n in range(count)))
        assert server.opened == count
        yield server, http, client
