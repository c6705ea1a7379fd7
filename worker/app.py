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
from dataclasses import dataclass
from pathlib import Path
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
from worker.definitions import FieldDefinitions, RedisDefinitionsCache
from worker.jobs import Delivery, Job
from worker.limiter import (
    OperatingBudget,
    RequestPacer,
    SharedBackends,
    SystemClock,
    shared_backends,
)
from worker.observability.health import HealthServer
from worker.observability.logging import SecretMask, configure_logging
from worker.observability.metrics import Metrics
from worker.outcomes import Outcomes
from worker.pipeline import Pipeline
from worker.settings import PORTAL_HEADER, Portal, Settings, redact_url
from worker.topology import Topology, TopologyError, declare

__all__ = ["Worker", "run", "secrets_of"]

log = structlog.get_logger("worker")

# Requests of the portal's bucket never filled by the pacer (see RequestPacer).
LOCAL_HEADROOM = 0.2
SHARED_HEADROOM = 2.0


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
    for portal in settings.portals().values():
        if portal.webhook_url is not None:
            parts = urlsplit(portal.webhook_url.get_secret_value()).path.split("/")
            if len(parts) > 3:
                found.append(parts[3])
        for secret in (portal.client_secret, portal.refresh_token):
            if secret is not None:
                found.append(secret.get_secret_value())
    return found


def build_auth(
    settings: Settings,
    portal: Portal | None = None,
    *,
    http: httpx.AsyncClient,
    mask: SecretMask | None,
    redis: Redis | None = None,
) -> Auth:
    """The webhook, or the OAuth application whose tokens are masked in logs as they come.

    Without ``portal``: the one messages without a portal header go to.
    """
    if portal is None:
        portal = settings.portals().get(settings.B24_DEFAULT_PORTAL)
        if portal is None:
            raise ValueError(f"no portal {settings.B24_DEFAULT_PORTAL!r} is configured")
    if portal.webhook_url is not None:
        return WebhookAuth(portal.webhook_url.get_secret_value())
    if not (
        portal.portal_url and portal.client_id and portal.client_secret and portal.refresh_token
    ):
        raise ValueError(f"portal {portal.key!r} has neither a webhook nor OAuth credentials")
    return OAuthAuth(
        http=http,
        portal_url=portal.portal_url,
        client_id=portal.client_id,
        client_secret=portal.client_secret.get_secret_value(),
        refresh_token=portal.refresh_token.get_secret_value(),
        token_url=settings.B24_OAUTH_TOKEN_URL,
        store=token_store(settings, portal, redis=redis),
        on_new_secret=(lambda secret: mask.add(secret)) if mask is not None else None,
    )


def token_store(
    settings: Settings, portal: Portal | None = None, *, redis: Redis | None = None
) -> TokenStore:
    """Redis when LIMITER_URL is set (replicas share the token), else a file.

    The portal of the B24_* variables keeps B24_TOKEN_FILE; a portal of
    B24_PORTALS gets that name with its key before the suffix.
    """
    if portal is None:
        portal = settings.portals()[settings.B24_PORTAL_KEY]
    limiter_url = settings.LIMITER_URL.get_secret_value()
    if redis is None and limiter_url:
        redis = Redis.from_url(limiter_url)
    if redis is None:
        path = Path(settings.B24_TOKEN_FILE)
        if portal.key in settings.B24_PORTALS:
            path = path.with_name(f"{path.stem}.{portal.key}{path.suffix}")
        return FileTokenStore(str(path))
    origin = urlsplit(portal.portal_url or "").hostname or portal.key
    return RedisTokenStore(redis, key=f"b24-worker:oauth:{origin}:{portal.client_id}")


def topology_of(settings: Settings) -> Topology:
    delays = tuple(int(part) for part in settings.RETRY_DELAYS_S.split(",") if part.strip())
    return Topology(
        update_queue=settings.UPDATE_QUEUE,
        result_queue=settings.RESULT_QUEUE,
        dead_letter_queue=settings.DEAD_LETTER_QUEUE,
        retry_delays_s=delays or (5,),
        shards=settings.SHARDS,
    )


@dataclass
class Lane:
    """One portal's path: its client, limiter, breaker, field definitions and pipeline."""

    portal: Portal
    pipeline: Pipeline
    breaker: Breaker
    definitions: FieldDefinitions
    limiter: SharedBackends | None = None  # None: the limiter's state is in this process


class Worker:
    """Everything the worker runs, built from settings; `start`, then `drain`.

    Each configured portal gets a lane of its own; the consumers, the outcome
    publisher and the acks are shared. A delivery goes to the lane its
    ``x-b24-portal`` header names (B24_DEFAULT_PORTAL without one).
    """

    def __init__(self, settings: Settings, *, mask: SecretMask | None = None) -> None:
        self.settings = settings
        self.mask = mask
        self.metrics = Metrics()
        self.topology = topology_of(settings)
        self.connection: AbstractRobustConnection | None = None
        self.lanes: dict[str, Lane] = {}
        self._consumers: Consumers | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health: HealthServer | None = None
        self._http = make_http_client(timeout_s=settings.B24_TIMEOUT_S)
        limiter_url = settings.LIMITER_URL.get_secret_value()
        self._redis: Redis | None = Redis.from_url(limiter_url) if limiter_url else None

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline of the default portal (or the only one)."""
        return self._default_lane().pipeline

    @property
    def consumers(self) -> Consumers:
        return _started(self._consumers)

    @property
    def breaker(self) -> Breaker:
        return self._default_lane().breaker

    def _default_lane(self) -> Lane:
        lane = self.lanes.get(self.settings.B24_DEFAULT_PORTAL)
        if lane is None and self.lanes:
            lane = next(iter(self.lanes.values()))
        return _started(lane)

    def not_ready(self) -> str | None:
        if self.connection is None or self.connection.is_closed:
            return "not connected to the broker"
        down = [
            f"{lane.breaker.state} ({key})"
            for key, lane in self.lanes.items()
            if lane.breaker.is_open
        ]
        if down:
            return "portal down: " + ", ".join(down)
        away = [
            key for key, lane in self.lanes.items() if lane.limiter and not lane.limiter.reachable
        ]
        if away:
            return "limiter unreachable: " + ", ".join(away)
        if self._consumers is None or not self._consumers.consuming:
            return "not consuming"
        return None

    async def start(self) -> None:
        s = self.settings
        self.connection = await aio_pika.connect_robust(s.AMQP_URL.get_secret_value())
        await declare(self.connection, self.topology)
        publish_channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        outcomes = Outcomes(
            channel=publish_channel,
            topology=self.topology,
            max_attempts=s.MAX_ATTEMPTS,
            max_message_bytes=s.MAX_MESSAGE_BYTES,
        )
        for key, portal in s.portals().items():
            self.lanes[key] = self._lane(portal, outcomes)
        self._consumers = Consumers(
            connection=self.connection,
            topology=self.topology,
            prefetch=s.PREFETCH,
            handle=self._accept,
            acks=outcomes.acks,
        )
        await self.consumers.open()
        for lane in self.lanes.values():
            self._tasks.append(asyncio.create_task(lane.pipeline.batcher.run()))
        self._tasks.append(asyncio.create_task(self.consumers.watch_cancellations()))
        self._tasks.append(asyncio.create_task(self._wake_parked()))
        if s.HTTP_PORT:
            self._health = HealthServer(
                port=s.HTTP_PORT, metrics=self.metrics, not_ready=self.not_ready
            )
            await self._health.start()
        await self.consumers.start()

    def _lane(self, portal: Portal, outcomes: Outcomes) -> Lane:
        s = self.settings
        clock = SystemClock()
        # With LIMITER_URL the bucket and the budget live in Redis under the portal's
        # host: every replica (and every deployment) serving the portal shares them.
        shared = shared_backends(self._redis, scope=portal.host) if self._redis else None
        pacer = RequestPacer(
            burst=portal.rate_burst,
            rate_per_s=portal.rate_per_second,
            reserve=portal.rate_reserve,
            clock=clock,
            backend=shared.pacer if shared else None,
            # Requests of several processes reach the portal with lags that differ
            # more than one process's do: keep more of the bucket empty.
            headroom=SHARED_HEADROOM if shared else LOCAL_HEADROOM,
        )
        budget = OperatingBudget(
            limit_s=portal.operating_limit_s,
            window_s=portal.operating_window_s,
            clock=clock,
            backend=shared.budget if shared else None,
        )
        auth = build_auth(s, portal, http=self._http, mask=self.mask, redis=self._redis)
        client = BitrixClient(http=self._http, auth=auth)
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

        async def down() -> None:
            await self._portal_down(portal.key)

        async def up() -> None:
            await self._portal_up(portal.key)

        breaker = Breaker(probe=probe, on_open=down, on_close=up, name=portal.key)
        # Replicas share the answers of crm.item.fields: each is asked of the portal once.
        cache = RedisDefinitionsCache(self._redis, scope=portal.host) if self._redis else None
        definitions = FieldDefinitions(client=paced, clock=clock, cache=cache)
        pipeline = Pipeline(
            outcomes=outcomes,
            caller=Caller(client=client, pacer=pacer, budget=budget, metrics=self.metrics),
            topology=self.topology,
            max_message_bytes=s.MAX_MESSAGE_BYTES,
            batch_size=s.BATCH_SIZE,
            linger_s=s.BATCH_LINGER_MS / 1000,
            on_portal_down=breaker.trip,
            on_settled=lambda job, done: self._count(job, done, portal.key),
            definitions=definitions,
        )
        return Lane(portal, pipeline, breaker, definitions, shared)

    async def _accept(self, message: Delivery, source: Source) -> None:
        self.metrics.consumed.labels(source).inc()
        named = message.headers.get(PORTAL_HEADER)
        if isinstance(named, bytes):
            named = named.decode("utf-8", "replace")
        key = named if isinstance(named, str) else self.settings.B24_DEFAULT_PORTAL
        lane = self.lanes.get(key)
        if lane is not None:
            await lane.pipeline.accept(message, source)
        elif source == "poison":
            # Reported whatever it names: a poisoned message is not sent anywhere.
            await self.pipeline.accept(message, source)
        else:
            await self.pipeline.reject(message, source, self._unknown_portal(named))

    def _unknown_portal(self, named: object) -> str:
        known = ", ".join(sorted(self.lanes)) or "none"
        if named is None:
            return (
                f"the message has no {PORTAL_HEADER} header and the default portal "
                f"{self.settings.B24_DEFAULT_PORTAL!r} is not configured (configured: {known})"
            )
        if not isinstance(named, str):
            return f"the {PORTAL_HEADER} header must be a string naming a portal"
        shown = named if len(named) <= 64 else named[:64] + "..."
        return f"{PORTAL_HEADER} {shown!r} is not a configured portal (configured: {known})"

    def _count(self, job: Job, done: str, portal: str | None = None) -> None:
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
            portal=portal,
            item=job.key,
            outcome=done,
            attempts=job.attempts,
        )

    async def _portal_down(self, key: str) -> None:
        """One portal is down: consuming stops (for every portal: they share the queue)."""
        self.metrics.portal_up.set(0)
        lane = self.lanes[key]
        lane.pipeline.paused = True
        await self.consumers.pause()
        returned = await lane.pipeline.hand_back_held()
        log.info("portal.handed_back", portal=key, messages=returned)

    async def _portal_up(self, key: str) -> None:
        self.lanes[key].pipeline.paused = False
        if any(lane.breaker.is_open for lane in self.lanes.values()):
            return
        self.metrics.portal_up.set(1)
        await self.consumers.resume()

    async def _wake_parked(self) -> None:
        while True:
            await asyncio.sleep(5)
            for lane in self.lanes.values():
                await lane.pipeline.wake_parked()

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
        pipelines = [lane.pipeline for lane in self.lanes.values()]
        for pipeline in pipelines:
            pipeline.paused = True
            pipeline.draining = True
        if pipelines:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(p.batcher.wait_idle() for p in pipelines)),
                    self.settings.DRAIN_TIMEOUT_S,
                )
            except TimeoutError:
                log.warning(
                    "worker.drain_timeout",
                    note="calls still out; their commands go back to the queue unsettled",
                )
            await pipelines[0].outcomes.acks.flush()
        for task in self._tasks:
            task.cancel()
        # The broker before the portal client: a call still out must not end, as
        # the client closes, in a retry copy published and acked after the drain.
        if self.connection is not None:
            await self.connection.close()
        for lane in self.lanes.values():
            await lane.breaker.close()
            await lane.definitions.close()
        if self._health is not None:
            await self._health.stop()
        await self._http.aclose()
        if self._redis is not None:
            await self._redis.aclose()


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
