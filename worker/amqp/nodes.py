"""The broker's nodes: ``AMQP_URL`` may name every node of a RabbitMQ cluster.

``AMQP_URL=amqp://u:p@node1:5672/,amqp://u:p@node2:5672/,...`` lists the nodes;
quorum queues keep their messages on a majority of them, so any live node
serves every queue. At start the nodes are tried in the order given until one
accepts the connection. After that the connection is aio-pika's robust one,
which reopens the channels (their prefetch and publisher confirms) and lets
the consumers subscribe again, with one change: each new connection attempt
goes to the next node in the list, where aio-pika would retry the one URL it
was given. A node that went away is thus left at the next attempt, and a
cluster with one node down is reached again within one attempt.

aio-pika has no option for this. `NodesConnection` relies on one thing of its
robust connection: it clears ``transport`` at the start of every connection
attempt (``RobustConnection.__connect_transport``). That is where the next
node is chosen; tests/worker/amqp/test_nodes.py holds it against a live broker,
so an aio-pika release that changes it fails there, not in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from yarl import URL

__all__ = [
    "NodesConnection",
    "bare_channel",
    "connect_any",
    "connect_nodes",
    "exists",
    "split_nodes",
    "underlay",
]

_SCHEMES = ("amqp", "amqps")


def split_nodes(value: str) -> list[str]:
    """The node URLs of a comma-separated ``AMQP_URL``; ValueError naming what is wrong."""
    urls = [part.strip() for part in value.split(",")]
    if not value.strip() or any(not url for url in urls):
        raise ValueError("AMQP_URL is empty or has an empty entry between commas")
    for number, url in enumerate(urls, start=1):
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            where = f"entry {number} of AMQP_URL" if len(urls) > 1 else "AMQP_URL"
            raise ValueError(f"{where} must be an amqp:// or amqps:// URL with a host")
    return urls


async def underlay(connection: AbstractConnection) -> aiormq.abc.AbstractConnection:
    """The aiormq connection beneath ``connection``, once it is up: while a robust
    connection reconnects, the next one."""
    await connection.ready()
    transport = connection.transport
    if transport is None:
        raise aiormq.exceptions.ConnectionClosed(320, "the connection is closed")
    return transport.connection


@asynccontextmanager
async def bare_channel(
    connection: AbstractConnection,
) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    """A channel of the aiormq connection beneath ``connection``, closed on leaving:
    for whatever the broker may refuse (a look-up that finds nothing, a declare
    with other arguments, a claim lock held elsewhere). The broker closes the
    channel it refuses on, and aio-pika's robust channel then opens itself again,
    to stay open for the connection's life: one channel more at every refusal.
    This one stays closed."""
    channel = await (await underlay(connection)).channel(publisher_confirms=False)
    try:
        yield channel
    finally:
        if not channel.is_closed:
            await channel.close()


async def exists(connection: AbstractConnection, name: str, *, exchange: bool) -> bool:
    """Whether the exchange (or queue) ``name`` exists, asked passively."""
    async with bare_channel(connection) as channel:
        try:
            if exchange:
                await channel.exchange_declare(name, passive=True)
            else:
                await channel.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
    return True


def _rotated(urls: Sequence[str], first: int) -> list[str]:
    return [*urls[first:], *urls[:first]]


class NodesConnection(RobustConnection):
    """A robust connection that moves to the next node at every connection attempt."""

    def __init__(self, url: URL, *, nodes: Sequence[str] = (), **kwargs: Any) -> None:
        self._nodes = [URL(node) for node in nodes] or [URL(url)]
        self._at = 0
        self._clears = 0
        self._transport: Any = None
        super().__init__(url=self._nodes[0], **kwargs)

    @property
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None:
            # Cleared by the constructor, then at the start of every attempt (and at
            # close): from the second attempt on, each goes to the next node.
            self._clears += 1
            if self._clears > 2:
                self._at = (self._at + 1) % len(self._nodes)
                self.url = self._nodes[self._at]
        self._transport = value

    @property
    def node(self) -> str:
        """The node in use (or being tried), without credentials."""
        return f"{self.url.host}:{self.url.port}"


async def connect_nodes(amqp_url: str, *, timeout_s: float | None = None) -> NodesConnection:
    """A robust connection to the first node of ``amqp_url`` that accepts one;
    the last node's failure is raised when none does."""
    nodes = split_nodes(amqp_url)
    for first in range(len(nodes) - 1):
        try:
            return await _robust(_rotated(nodes, first), timeout_s)
        except CONNECTION_EXCEPTIONS:
            continue
    return await _robust(_rotated(nodes, len(nodes) - 1), timeout_s)


async def _robust(order: list[str], timeout_s: float | None) -> NodesConnection:
    connection = NodesConnection(URL(order[0]), nodes=order)
    try:
        await connection.connect(timeout=timeout_s)
    except BaseException:
        await connection.close()
        raise
    return connection


async def connect_any(amqp_url: str, *, timeout_s: float) -> AbstractConnection:
    """A plain connection to the first node of ``amqp_url`` that accepts one;
    the last node's failure is raised when none does."""
    *before, last = split_nodes(amqp_url)
    for url in before:
        try:
            return await aio_pika.connect(url, timeout=timeout_s)
        except (*CONNECTION_EXCEPTIONS, TimeoutError):
            continue
    return await aio_pika.connect(last, timeout=timeout_s)
