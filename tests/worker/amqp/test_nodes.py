"""AMQP_URL naming several nodes: the first live one at start, the next one at every reconnect.

The broker of the tests is one node; two spellings of its address (127.0.0.1
and localhost) stand for two nodes, and a closed port for a node that is down.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from worker.amqp.nodes import NodesConnection, connect_any, connect_nodes, split_nodes


def _with_host(url: str, host: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    netloc = f"{credentials}{host}:{port or parts.port or 5672}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ("amqp://a:5672/", ["amqp://a:5672/"]),
        (" amqp://a/ , amqps://b:5671/v ", ["amqp://a/", "amqps://b:5671/v"]),
    ],
)
def test_a_comma_separated_value_names_each_node(value: str, wanted: list[str]) -> None:
    assert split_nodes(value) == wanted


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("amqp://a/,,amqp://b/", "empty entry"),
        ("amqp://a/,http://b/", "entry 2 of AMQP_URL must be an amqp://"),
        ("a:5672", "AMQP_URL must be an amqp://"),
    ],
)
def test_a_value_that_is_not_a_list_of_amqp_urls_is_refused_clearly(
    value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split_nodes(value)


async def test_a_node_that_is_down_at_start_is_passed_over(amqp_url: str) -> None:
    down = _with_host(amqp_url, "127.0.0.1", port=1)
    connection = await connect_nodes(f"{down},{amqp_url}", timeout_s=5)
    try:
        assert connection.node.endswith(f":{urlsplit(amqp_url).port or 5672}")
        plain = await connect_any(f"{down},{amqp_url}", timeout_s=5)
        await plain.close()
    finally:
        await connection.close()


async def test_every_node_down_raises_the_last_failure(amqp_url: str) -> None:
    down = [_with_host(amqp_url, "127.0.0.1", port=port) for port in (1, 2)]
    with pytest.raises(ConnectionError):
        await connect_nodes(",".join(down), timeout_s=2)
    with pytest.raises(ConnectionError):
        await connect_any(",".join(down), timeout_s=2)


async def test_a_lost_connection_comes_back_on_the_next_node_with_its_channels(
    amqp_url: str,
) -> None:
    first, second = _with_host(amqp_url, "127.0.0.1"), _with_host(amqp_url, "localhost")
    connection = await connect_nodes(f"{first},{second}", timeout_s=5)
    assert isinstance(connection, NodesConnection)
    queue_name = f"test.nodes.{uuid.uuid4().hex[:8]}"
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=True)
        got: list[bytes] = []
        arrived = asyncio.Event()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message.body)
            arrived.set()
            await message.ack()

        await queue.consume(take)
        assert connection.url.host == "127.0.0.1"
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        transport = connection.transport
        assert transport is not None
        await transport.connection.close(ConnectionError("the node went away"))
        await asyncio.wait_for(reconnected.wait(), 15)
        assert connection.url.host == "localhost"
        # The channel and its consumer were restored on the new connection.
        await channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=queue_name)
        await asyncio.wait_for(arrived.wait(), 10)
        assert got == [b"after"]
    finally:
        await connection.close()
