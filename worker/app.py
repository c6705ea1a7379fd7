"""The composition root: builds the worker from its settings and runs it until
SIGTERM or SIGINT, then drains.

    settings -> broker connection -> topology -> consumers -> pipeline
                                                  pipeline -> caller -> limiter + Bitrix24 client
                                                  pipeline -> outcomes -> broker
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aio_pika
import httpx
import structlog
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import Redis

from worker.bitrix import (
    Auth,
    BitrixClient,
    CommandAnswer,
    FileTokenStore,
    OAuthAuth,
    PortalError,
    TokenStore,
    WebhookAuth,
    make_http_client,
)
from worker.bitrix.redis_tokens import RedisTokenStore
from worker.breaker import Breaker
from worker.calling import Caller
from worker.classify import classify
from worker.consumer import Consumers, Source
from worker.definitions import FieldDefinitions
from worker.jobs import Delivery, Job
from worker.limiter import OperatingBudget, RequestPacer, SystemClock
from worker.observability.health import HealthServer
from worker.observability.logging import SecretMask, configure_logging
from worker.observability.metrics import Metrics
from worker.outcomes import Outcomes
from worker.pipeline import Pipeline
from worker.settings import Settings, redact_url
from worker.topology import Topology, TopologyError, declare

__all__ = ["Worker", "run", "secrets_of"]

log = structlog.get_logger("worker")


_T = TypeVar("_T")


class _Paced:
    """A client whose single calls wait for the request bucket first."""

    def __init__(self, client: BitrixClient, pacer: RequestPacer) -> None:
        self._client = client
        self._pacer = pacer

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CommandAnswer:
        await self._pacer.acquire()
        return await self._client.call(method, params)


def _started(part: _T | None) -> _T:
    if part is None:
        raise RuntimeError("the worker has not been started")
    return part


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


def build_auth(settings: Settings, *, http: httpx.AsyncClient, mask: SecretMask | None) -> Auth:
    """The webhook, or the OAuth application whose tokens are masked in logs as they come."""
    if settings.B24_WEBHOOK_URL is not None:
        return WebhookAuth(settings.B24_WEBHOOK_URL.get_secret_value())
    if not (
        settings.B24_PORTAL_URL
        and settings.B24_CLIENT_ID
        and settings.B24_CLIENT_SECRET
        and settings.B24_REFRESH_TOKEN
    ):
        raise ValueError("no portal configured")
    return OAuthAuth(
        http=http,
        portal_url=settings.B24_PORTAL_URL,
        client_id=settings.B24_CLIENT_ID,
        client_secret=settings.B24_CLIENT_SECRET.get_secret_value(),
        refresh_token=settings.B24_REFRESH_TOKEN.get_secret_value(),
        token_url=settings.B24_OAUTH_TOKEN_URL,
        store=token_store(settings),
        on_new_secret=(lambda secret: mask.add(secret)) if mask is not None else None,
    )


def token_store(settings: Settings) -> TokenStore:
    """Redis when LIMITER_URL is set (replicas share the token), else B24_TOKEN_FILE."""
    limiter_url = settings.LIMITER_URL.get_secret_value()
    if not limiter_url:
        return FileTokenStore(settings.B24_TOKEN_FILE)
    origin = urlsplit(settings.B24_PORTAL_URL or "").hostname or "portal"
    return RedisTokenStore(
        Redis.from_url(limiter_url), key=f"b24-worker:oauth:{origin}:{settings.B24_CLIENT_ID}"
    )


def topology_of(settings: Settings) -> Topology:
    delays = tuple(int(part) for part in settings.RETRY_DELAYS_S.split(",") if part.strip())
    return Topology(
        update_queue=settings.UPDATE_QUEUE,
        result_queue=settings.RESULT_QUEUE,
        dead_letter_queue=settings.DEAD_LETTER_QUEUE,
        retry_delays_s=delays or (5,),
        shards=settings.SHARDS,
    )


class Worker:
    """Everything the worker runs, built from settings; `start`, then `drain`."""

    def __init__(self, settings: Settings, *, mask: SecretMask | None = None) -> None:
        self.settings = settings
        self.mask = mask
        self.metrics = Metrics()
        self.topology = topology_of(settings)
        self.connection: AbstractRobustConnection | None = None
        self._consumers: Consumers | None = None
        self._pipeline: Pipeline | None = None
        self._breaker: Breaker | None = None
        self._definitions: FieldDefinitions | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health: HealthServer | None = None
        self._http = make_http_client(timeout_s=settings.B24_TIMEOUT_S)

    @property
    def pipeline(self) -> Pipeline:
        return _started(self._pipeline)

    @property
    def consumers(self) -> Consumers:
        return _started(self._consumers)

    @property
    def breaker(self) -> Breaker:
        return _started(self._breaker)

    def not_ready(self) -> str | None:
        if self.connection is None or self.connection.is_closed:
            return "not connected to the broker"
        if self._breaker is not None and self._breaker.is_open:
            return f"portal down: {self._breaker.state}"
        if self._consumers is None or not self._consumers.consuming:
            return "not consuming"
        return None

    async def start(self) -> None:
        s = self.settings
        self.connection = await aio_pika.connect_robust(s.AMQP_URL.get_secret_value())
        await declare(self.connection, self.topology)
        clock = SystemClock()
        pacer = RequestPacer(
            burst=s.B24_RATE_BURST,
            rate_per_s=s.B24_RATE_PER_SECOND,
            reserve=s.B24_RATE_RESERVE,
            clock=clock,
        )
        budget = OperatingBudget(
            limit_s=s.B24_OPERATING_LIMIT_S, window_s=s.B24_OPERATING_WINDOW_S, clock=clock
        )
        client = BitrixClient(http=self._http, auth=build_auth(s, http=self._http, mask=self.mask))
        publish_channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        outcomes = Outcomes(
            channel=publish_channel,
            topology=self.topology,
            max_attempts=s.MAX_ATTEMPTS,
            max_message_bytes=s.MAX_MESSAGE_BYTES,
        )

        # Probes and field definitions take tokens from the same bucket as updates.
        paced = _Paced(client, pacer)

        async def probe() -> str | None:
            try:
                await paced.call("crm.item.fields", {"entityTypeId": 2})
            except PortalError as exc:
                verdict = classify(exc.code, exc.status)
                return verdict.portal_state if verdict.kind == "portal" else None
            except Exception:  # still unreachable: keep probing
                return "unreachable"
            return None

        self._breaker = Breaker(probe=probe, on_open=self._portal_down, on_close=self._portal_up)
        self._definitions = FieldDefinitions(client=paced, clock=clock)
        self._pipeline = Pipeline(
            outcomes=outcomes,
            caller=Caller(client=client, pacer=pacer, budget=budget, metrics=self.metrics),
            topology=self.topology,
            max_message_bytes=s.MAX_MESSAGE_BYTES,
            batch_size=s.BATCH_SIZE,
            linger_s=s.BATCH_LINGER_MS / 1000,
            on_portal_down=self._breaker.trip,
            on_settled=self._count,
            definitions=self._definitions,
        )
        self._consumers = Consumers(
            connection=self.connection,
            topology=self.topology,
            prefetch=s.PREFETCH,
            handle=self._accept,
            acks=outcomes.acks,
        )
        await self.consumers.open()
        self._tasks.append(asyncio.create_task(self.pipeline.batcher.run()))
        self._tasks.append(asyncio.create_task(self.consumers.watch_cancellations()))
        self._tasks.append(asyncio.create_task(self._wake_parked()))
        if s.HTTP_PORT:
            self._health = HealthServer(
                port=s.HTTP_PORT, metrics=self.metrics, not_ready=self.not_ready
            )
            await self._health.start()
        await self.consumers.start()

    async def _accept(self, message: Delivery, source: Source) -> None:
        self.metrics.consumed.labels(source).inc()
        await self.pipeline.accept(message, source)

    def _count(self, job: Job, done: str) -> None:
        m = self.metrics
        if done == "succeeded":
            m.succeeded.inc()
        elif done == "failed":
            m.failed.labels(job.failure.value if job.failure else "unknown").inc()
        elif done == "retried":
            m.retried.inc()
        elif done == "handed_back":
            m.handed_back.inc()
        log.info(
            "message.settled",
            message_id=job.message_id,
            item=job.key,
            outcome=done,
            attempts=job.attempts,
        )

    async def _portal_down(self) -> None:
        self.metrics.portal_up.set(0)
        self.pipeline.paused = True
        await self.consumers.pause()
        returned = await self.pipeline.hand_back_held()
        log.info("portal.handed_back", messages=returned)

    async def _portal_up(self) -> None:
        self.metrics.portal_up.set(1)
        self.pipeline.paused = False
        await self.consumers.resume()

    async def _wake_parked(self) -> None:
        while True:
            await asyncio.sleep(5)
            await self.pipeline.wake_parked()

    async def drain(self) -> None:
        """Stop consuming, finish what is in flight within DRAIN_TIMEOUT_S, then close.

        What is still held is not handed back one by one: a command whose call
        is still out stays unacked until the connection closes, so nacking the
        commands held behind it for its item would put them ahead of it on the
        queue. Closing the connection returns every unacked delivery at once,
        in the order they were delivered.
        """
        if self._consumers is not None:
            with contextlib.suppress(Exception):
                await self._consumers.stop()
        if self._pipeline is not None:
            self._pipeline.paused = True
            try:
                await asyncio.wait_for(
                    self._pipeline.batcher.wait_idle(), self.settings.DRAIN_TIMEOUT_S
                )
            except TimeoutError:
                log.warning(
                    "worker.drain_timeout",
                    note="calls still out; their commands go back to the queue unsettled",
                )
            await self._pipeline.outcomes.acks.flush()
        for task in self._tasks:
            task.cancel()
        # The broker before the portal client: a call still out must not end, as
        # the client closes, in a retry copy published and acked after the drain.
        if self.connection is not None:
            await self.connection.close()
        if self._breaker is not None:
            await self._breaker.close()
        if self._definitions is not None:
            await self._definitions.close()
        if self._health is not None:
            await self._health.stop()
        await self._http.aclose()


async def run(settings: Settings) -> int:
    """Run until a stop signal; return the process exit code."""
    mask = SecretMask(secrets_of(settings))
    configure_logging(level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT, mask=mask)
    if not settings.has_portal:
        log.error("config.no_portal", hint="set B24_WEBHOOK_URL, or the OAuth variables")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(settings, mask=mask)
    broker = redact_url(settings.AMQP_URL.get_secret_value())
    try:
        await worker.start()
    except TopologyError as exc:
        log.error("broker.topology", error=str(exc))
        await worker.drain()
        return 1
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        log.error(
            "broker.unreachable",
            broker=broker,
            error=type(exc).__name__,
            hint="is RabbitMQ running, and are AMQP_URL's host, port and credentials right?",
        )
        await worker.drain()
        return 1
    log.info("worker.started", broker=broker, settings=settings.describe())
    await stop.wait()
    log.info("worker.stopping", drain_timeout_s=settings.DRAIN_TIMEOUT_S)
    await worker.drain()
    log.info("worker.stopped")
    return 0
