"""The composition root: builds the worker from its settings and runs it until
SIGTERM or SIGINT.

This version connects to the broker and waits; the delivery pipeline
(consume -> validate -> limit -> batch -> call -> classify -> publish -> ack) is
built on this skeleton.
"""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlsplit

import aio_pika
import structlog

from worker.observability.logging import SecretMask, configure_logging
from worker.settings import Settings, redact_url

__all__ = ["run", "secrets_of"]

log = structlog.get_logger("worker")


def secrets_of(settings: Settings) -> list[str]:
    """Every secret string the settings hold, for the log mask."""
    found = []
    for url in (settings.AMQP_URL, settings.LIMITER_URL):
        password = urlsplit(url.get_secret_value()).password
        if password:
            found.append(password)
    if settings.B24_WEBHOOK_URL is not None:
        parts = urlsplit(settings.B24_WEBHOOK_URL.get_secret_value()).path.split("/")
        if len(parts) > 3:
            found.append(parts[3])
    for secret in (settings.B24_CLIENT_SECRET, settings.B24_REFRESH_TOKEN):
        if secret is not None:
            found.append(secret.get_secret_value())
    return found


async def run(settings: Settings) -> int:
    """Run until a stop signal; return the process exit code."""
    configure_logging(
        level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT, mask=SecretMask(secrets_of(settings))
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    broker = redact_url(settings.AMQP_URL.get_secret_value())
    try:
        connection = await aio_pika.connect_robust(settings.AMQP_URL.get_secret_value())
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        log.error(
            "broker.unreachable",
            broker=broker,
            error=type(exc).__name__,
            hint="is RabbitMQ running, and are AMQP_URL's host, port and credentials right?",
        )
        return 1
    log.info(
        "worker.started",
        broker=broker,
        settings=settings.describe(),
        pipeline="not built yet: the worker connects and waits",
    )
    try:
        await stop.wait()
    finally:
        log.info("worker.stopping")
        await connection.close()
    log.info("worker.stopped")
    return 0
