"""A TCP proxy in front of Redis that a test can close, reopen, or have lose one answer."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class Proxy:
    """Forwards connections on a local port to Redis; closing it drops every open connection."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._database = parts.path
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.lose_answer_to: bytes | None = None
        self.answers_lost = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self._database}"

    async def open(self) -> None:
        """Accept connections again, on the same port as before."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Refuse new connections and reset the open ones, as a Redis gone away would."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_out.transport.abort()
            return
        pair = (client_out, server_out)
        self._open.update(pair)
        losing = asyncio.Event()
        try:
            await asyncio.gather(
                self._pipe(client_in, server_out, pair, request=losing),
                self._pipe(server_in, client_out, pair, answer=losing),
            )
        finally:
            self._open.difference_update(pair)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        target: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, ...],
        *,
        request: asyncio.Event | None = None,
        answer: asyncio.Event | None = None,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if request is not None and self.lose_answer_to and self.lose_answer_to in data:
                    self.lose_answer_to = None
                    request.set()
                elif answer is not None and answer.is_set():
                    # The request was carried out; its answer never arrives.
                    self.answers_lost += 1
                    break
                target.write(data)
                await target.drain()
        for writer in pair:
            writer.transport.abort()
