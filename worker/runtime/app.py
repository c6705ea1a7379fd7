"""The composition root: builds the worker from its settings and runs it until
SIGTERM or SIGINT, then drains.

    settings -> broker connection -> topology
             -> one acknowledger and one publisher, shared by everything that settles
             -> consumers -> router -> each portal's lane (runtime/lanes.py): its pipeline
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import time
from collections.abc import Collection
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import aio_pika
import aiormq
import httpx
import structlog
from aio_pika.abc import AbstractRobustConnection

from worker import tracing
from worker.amqp.acks import Acks
from worker.amqp.aiormq_internals import AiormqIncompatibleError
from worker.amqp.backlog import read_every, ready_counts
from worker.amqp.consumer import Consumers
from worker.amqp.nodes import NodesConnection, connect_nodes, underlay
from worker.amqp.publishing import Publisher
from worker.amqp.topology import TopologyError, declare, declare_portal
from worker.bitrix import Auth, make_http_client
from worker.bulk import JobLedger, JobStoreError, open_jobs
from worker.credentials import build_auth, token_store
from worker.flow.outcomes import Outcomes
from worker.flow.pipeline import Pipeline
from worker.flow.routing import Router
from worker.limiter import FirstCalls
from worker.observability.logging import SecretMask, configure_logging
from worker.observability.metrics import Metrics
from worker.observability.observer import MetricsObserver
from worker.observability.openfiles import (
    WHERE_THE_LIMIT_IS_RAISED,
    open_files_needed,
    raise_open_files_limit,
)
from worker.observability.status import REFRESH_S, JobRow, PortalRow, Status
from worker.registry import Registry, RegistryError, open_registry, with_registry
from worker.runtime.lanes import Lane, Lanes, build_lane
from worker.runtime.readiness import Readiness
from worker.settings import Portal, PortalConfig, Settings, portal_secrets, redact_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from worker.observability.health import HealthServer, InLoopServer

__all__ = ["Worker", "run"]

log = structlog.get_logger("worker")

_T = TypeVar("_T")

# The HTTP servers (HTTP_PORT, INSTALL_PORT) start once every portal with commands
# waiting at start has made its first call, or this long after consuming began at
# the latest.
SERVE_AFTER_S = 2.0


# Young-generation threshold and the two older ones. The default (700, 10, 10)
# had the cycle collector take 17-21% of the worker's CPU with limits off: each
# batch allocates thousands of containers (a portal answer alone is 50 items of
# ~54 fields) while up to PREFETCH deliveries are held. Measured with (20000,
# 20, 20) and the start-up heap frozen: about 1% of the CPU, p99 latency at
# 500 messages/s from 90 to 68 ms, for about 15 MiB more peak memory.
COLLECTOR_THRESHOLDS = (20_000, 20, 20)


# A start the broker broke off with an internal error (541 INTERNAL_ERROR, the
# connection closed) is tried this many times in all, this long apart. RabbitMQ
# 3.10 does that when a consumer registers on a quorum queue another process has
# just declared, before the queue's own process runs on the node: replicas
# starting together on new queues meet it now and then (its log:
# `{badmatch,{error,noproc}}` in `rabbit_quorum_queue:consume`).
START_TRIES = 3
START_AGAIN_AFTER_S = 1.0

# How often the work queues' backlog is read for /metrics.
BACKLOG_EVERY_S = 15.0
# How often the registry's version is read: a portal registered or removed is
# served, or no longer, within about this long (and a command naming a portal
# not yet known reads it at once).
REGISTRY_EVERY_S = 1.0


class PortUnavailableError(RuntimeError):
    """A port cannot be bound: another process listens there, or it is not allowed."""


def listening_socket(port: int, setting: str) -> socket.socket:
    """A TCP socket listening on ``port`` (named by ``setting``) on every IPv4 address,
    for a server to serve later: connections wait in its backlog until then.
    PortUnavailableError when it cannot be bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))  # noqa: S104 - probes, scrapers and portals come from outside
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PortUnavailableError(f"{setting} {port} cannot be bound: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def tune_collector() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    Called once everything is built and before the first delivery: the frozen
    objects (modules, models, settings) live as long as the process, so full
    collections no longer walk them. Reference counting still frees everything
    at once; only cycles wait a little longer. When `b24-worker run` kept the
    collector off through start-up, the few cycles start-up left are frozen
    with the rest instead of collected first (a full pass costs 30-40 ms here).
    """
    if gc.isenabled():
        gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    gc.enable()


def _started(part: _T | None) -> _T:
    if part is None:
        raise RuntimeError("the worker has not been started")
    return part


class Worker:
    """Everything the worker runs, built from settings; `start`, then `drain`.

    Each configured portal gets a lane of its own; the consumers, the publisher
    and the acknowledger are shared. The router hands a delivery to the lane
    its ``x-b24-portal`` header names (B24_DEFAULT_PORTAL without one).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        mask: SecretMask | None = None,
        configured: Collection[str] | None = None,
        open_files: int | None = None,
    ) -> None:
        """``configured``: the portals of the configuration, when ``settings`` also
        hold the registry's (`with_registry`); the others follow the registry.
        ``open_files``: the process's limit of open files, to check the portals'
        needs against (`raise_open_files_limit`)."""
        self.settings = settings
        self._open_files = open_files
        self._open_files_short = False
        self.mask = mask
        self.metrics = Metrics()
        self.topology = settings.topology()
        self.acks = Acks()
        self.connection: AbstractRobustConnection | None = None
        # The portals served; each one's lane is built at its first command.
        self.lanes = Lanes(
            self._build,
            self._auth,
            metrics=self.metrics,
            idle_s=settings.LANE_IDLE_S,
            shared_limiter=bool(settings.LIMITER_URL.get_secret_value()),
            token_max_age_s=settings.B24_TOKEN_RENEW_DAYS * 86_400.0,
        )
        # Commands waiting in each portal's queue, by portal, as last read.
        self.backlog: dict[str, int] = {}
        # Commands waiting on each work queue, by queue, as last read (and when).
        self.queues: dict[str, int] = {}
        self._queues_read_at = 0.0
        self._status_lock = asyncio.Lock()
        self._started_at = time.monotonic()
        self.readiness = Readiness(self.lanes.built)
        self._consumers: Consumers | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health: HealthServer | None = None
        # HTTP_PORT's and INSTALL_PORT's sockets, bound at start.
        self._listening: socket.socket | None = None
        self._install_listening: socket.socket | None = None
        self._app_events: InLoopServer | None = None
        self._app_events_http: httpx.AsyncClient | None = None
        self._publisher: Publisher | None = None
        # The portals that started with commands waiting, until each made a call.
        self._first_calls = FirstCalls(())
        # Portals registered at run time, by key, with the entry each lane was built from.
        self._configured = set(settings.portals() if configured is None else configured)
        self._registered = {
            key: config
            for key, config in settings.B24_PORTALS.items()
            if key not in self._configured
        }
        self._registry: Registry | None = None
        self._registry_version: int | None = 0
        self._gone: set[str] = set()  # portals gone for good (the registry says so)
        # Each portal's member_id, a second name messages may give it -> its key.
        self._aliases: dict[str, str] = dict(self.topology.aliases)
        self._registry_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        if settings.uses_registry:
            self._registry = open_registry(settings)
        # Bulk jobs: each result of a command that names one is written down here.
        self.ledger = JobLedger(
            open_jobs(settings), retention_s=settings.JOB_RETENTION_DAYS * 86_400.0
        )
        # One TLS context for every lane's client: loading the CA bundle is the
        # costly part of a client, and a deployment may serve a thousand portals.
        self._tls = httpx.create_ssl_context()
        # OAuth token renewals of every portal: one server, outliving any lane.
        self._token_http: httpx.AsyncClient | None = None
        limiter_url = settings.LIMITER_URL.get_secret_value()
        self._redis: Redis | None = None
        if limiter_url:
            # Imported here: a worker without LIMITER_URL never loads the Redis client.
            from redis.asyncio import Redis

            self._redis = Redis.from_url(limiter_url)

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline of the default portal (or the only one), its lane built if need be."""
        return self._default_lane().pipeline

    @property
    def consumers(self) -> Consumers:
        return _started(self._consumers)

    def _default_lane(self) -> Lane:
        lane = self.lanes.get(self.settings.B24_DEFAULT_PORTAL)
        if lane is None and self.lanes:
            lane = next(iter(self.lanes.values()))
        return _started(lane)

    def not_ready(self) -> str | None:
        """Why the worker is not ready (/readyz), or None."""
        return self.readiness.reason()

    async def start(self) -> None:
        s = self.settings
        # Bound first: a port in use stops the start before anything is consumed.
        if s.HTTP_PORT:
            self._listening = listening_socket(s.HTTP_PORT, "HTTP_PORT")
        if s.INSTALL_PORT:
            self._install_listening = listening_socket(s.INSTALL_PORT, "INSTALL_PORT")
        self.connection = connection = await connect_nodes(s.AMQP_URL.get_secret_value())

        def connected(*_: object) -> None:
            log.info("broker.connected", node=connection.node)

        connected()
        connection.reconnect_callbacks.add(connected)
        self.readiness.connection = self.connection
        ready = await declare(self.connection, self.topology)
        # The backlog each portal starts with, until _watch_backlog reads it again.
        for key in self.topology.portals:
            self.backlog[key] = ready.get(self.topology.portal_queue(key), 0)
        self._first_calls = FirstCalls(key for key, count in self.backlog.items() if count)
        self._publisher = publisher = Publisher(partial(underlay, connection))
        await publisher.open()
        router = Router(
            pipelines=self.lanes.pipelines,
            default_portal=s.B24_DEFAULT_PORTAL,
            # What ends before any portal (an unknown one, a poisoned message).
            outcomes=Outcomes(
                publisher=publisher,
                acks=self.acks,
                topology=self.topology,
                max_attempts=s.MAX_ATTEMPTS,
                observer=MetricsObserver(self.metrics, portal=None),
                max_message_bytes=s.MAX_MESSAGE_BYTES,
                ledger=self.ledger,
            ),
            observer=MetricsObserver(self.metrics, portal=None),
            # A portal registered a moment ago: read the registry again before failing.
            refresh=self._refresh_registry if self._registry is not None else None,
            gone=self._gone,
            aliases=self._aliases,
        )
        portals = s.portals()
        self._consumers = Consumers(
            connection=self.connection,
            topology=self.topology,
            prefetch=s.PREFETCH,
            handle=router.accept,
            acks=self.acks,
            portal_prefetch={key: s.portal_prefetch(p) for key, p in portals.items()},
            shared_portal=s.B24_DEFAULT_PORTAL,
            connect=self._connect_more,
            spread=s.PORTAL_CONNECTIONS,
            batch=s.BATCH_SIZE,
        )
        self.readiness.consumers = self._consumers
        for key, portal in portals.items():
            self.lanes.serve(key, portal)
        self._check_open_files()
        await self.consumers.open()
        self._tasks.append(asyncio.create_task(self.consumers.watch_cancellations()))
        self._tasks.append(asyncio.create_task(self.lanes.watch_idle()))
        self._tasks.append(asyncio.create_task(self._watch_backlog()))
        if self.topology.portal_queues and s.PORTAL_BALANCE_S > 0:
            self._tasks.append(asyncio.create_task(self._balance(s.PORTAL_BALANCE_S)))
        try:
            await self.ledger.read_aborts()  # before the first command is taken
        except JobStoreError as exc:
            log.warning("jobs.read_failed", error=str(exc))
        self._tasks.append(asyncio.create_task(self.ledger.watch()))
        if self._registry is not None:
            # Read in full at the first look: what start-up took from it is known
            # already, the portals gone for good are not.
            self._registry_version = None
            self._tasks.append(asyncio.create_task(self._watch_registry()))
        tune_collector()
        await self.consumers.start()
        if self._listening is not None or self._install_listening is not None:
            self._tasks.append(asyncio.create_task(self._serve()))

    async def _serve(self) -> None:
        """Serve HTTP_PORT and INSTALL_PORT, bound at start, once the first calls have
        left (SERVE_AFTER_S at most): importing and starting the HTTP server takes
        30-40 ms of the event loop, which every portal's first call would otherwise
        wait for. Meanwhile their connections wait in the sockets' backlogs."""
        await self._first_calls.all_called(SERVE_AFTER_S)
        await asyncio.sleep(0.1)  # a moment for the last of them to be written out
        if self._listening is not None:
            # Imported here: HTTP_PORT=0 needs none of the server's libraries.
            from worker.observability.health import HealthServer

            self._health = HealthServer(
                port=self.settings.HTTP_PORT,
                metrics=self.metrics,
                not_ready=self.readiness.reason,
                status=self.status,
            )
            await self._health.start(sockets=[self._listening])
        if self._install_listening is not None:
            await self._serve_app_events(self._install_listening)

    async def _serve_app_events(self, listening: socket.socket) -> None:
        """The application's install and uninstall events, on INSTALL_PORT."""
        from worker.runtime.install import AppEvents, app_events_server

        s = self.settings
        if s.B24_APP_CLIENT_ID is None or s.B24_APP_CLIENT_SECRET is None:
            raise RuntimeError("INSTALL_PORT without the application's credentials")
        self._app_events_http = httpx.AsyncClient(verify=self._tls)
        events = AppEvents(
            registry=_started(self._registry),
            client_id=s.B24_APP_CLIENT_ID,
            client_secret=s.B24_APP_CLIENT_SECRET.get_secret_value(),
            token_url=s.B24_OAUTH_TOKEN_URL,
            http=self._app_events_http,
            changed=self._refresh_registry,
            forget=self._forget_tokens,
        )
        self._app_events = app_events_server(port=s.INSTALL_PORT, events=events)
        await self._app_events.start(sockets=[listening])

    async def _forget_tokens(self, key: str, config: PortalConfig) -> None:
        """Remove the portal's stored OAuth token (an uninstall asking to clean up)."""
        portal = self.settings.portal(key, config)
        await token_store(self.settings, portal, redis=self._redis).forget()

    async def _connect_more(self) -> AbstractRobustConnection:
        """One more connection to the broker, for the portal queues' consumers."""
        return await connect_nodes(self.settings.AMQP_URL.get_secret_value())

    def _build(self, portal: Portal, auth: Auth) -> Lane:
        return build_lane(
            self.settings,
            portal,
            publisher=_started(self._publisher),
            acks=self.acks,
            consumption=self.consumers,
            topology=self.topology,
            tls=self._tls,
            metrics=self.metrics,
            mask=self.mask,
            redis=self._redis,
            backlog=self.backlog,
            ledger=self.ledger,
            first_calls=self._first_calls,
            auth=auth,
        )

    def _auth(self, portal: Portal) -> Auth:
        """``portal``'s auth: an OAuth one renews its tokens through one client shared
        by every portal (their OAuth server is one), not a lane's."""
        return build_auth(
            self.settings, portal, http=self._token_client, mask=self.mask, redis=self._redis
        )

    def _token_client(self) -> httpx.AsyncClient:
        if self._token_http is None:
            self._token_http = make_http_client(
                timeout_s=self.settings.B24_TIMEOUT_S, verify=self._tls
            )
        return self._token_http

    # -- portals registered at run time

    async def _watch_registry(self) -> None:
        """Serve the portals the registry gains, and stop serving those it loses."""
        failing = False
        while True:
            await asyncio.sleep(REGISTRY_EVERY_S)
            try:
                await self._refresh_registry()
            except Exception as exc:  # unreachable, or the broker: keep serving what is known
                if not failing:  # once per spell, not every second
                    log.warning("registry.unread", error=str(exc), note="tried again each second")
                failing = True
            else:
                if failing:
                    log.info("registry.read_again")
                failing = False

    async def _refresh_registry(self) -> None:
        """Read the registry again if it changed, and follow it."""
        registry = _started(self._registry)
        async with self._registry_lock:
            version = await registry.version()
            if version == self._registry_version:
                return
            found, gone = await registry.read()
            self._registry_version = version
            try:
                await self._follow(found, gone)
            except BaseException:
                self._registry_version = None  # what was not done is done at the next look
                raise

    async def _follow(self, found: dict[str, PortalConfig], gone: set[str]) -> None:
        """Apply the registry's portals (``found``) and those gone for good (``gone``)."""
        for key in sorted(self._gone - gone):  # back, or forgotten: no longer drained
            self._gone.discard(key)
            if key not in self.lanes:
                await self.consumers.remove_portal(key)
        for key in sorted(gone - self._gone - self._configured):
            self._gone.add(key)  # from now on its deliveries end as portal_gone
            self._retire(key, drain=True)
        for key in sorted(set(self._registered) - set(found)):
            self._retire(key)
        for key, config in sorted(found.items()):
            if key in self._configured:
                log.warning(
                    "registry.conflict",
                    portal=key,
                    note="registered and also configured: the configured one is served",
                )
            elif self._registered.get(key) != config:
                if key in self._registered:
                    self._retire(key)  # changed: served anew once the old lane is gone
                if key in self.lanes:
                    self._registry_version = None  # read again next time
                    continue
                await self._add_portal(key, config)

    def _retire(self, key: str, *, drain: bool = False) -> None:
        """Stop serving ``key`` in the background: its calls out may take up to
        B24_TIMEOUT_S to end, and the registry's other changes need not wait.
        ``drain``: the portal is gone for good; its queue is then consumed
        again, each command ending as `portal_gone` (the router's part)."""
        self._registered.pop(key, None)
        retiring = asyncio.create_task(self._remove_portal(key, drain=drain))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def _add_portal(self, key: str, config: PortalConfig) -> None:
        """Serve ``key``: all of it, or (the broker failing midway) nothing of it."""
        portal = self.settings.portal(key, config)
        if self.mask is not None:
            self.mask.add(*portal_secrets(portal))
        aliases = (portal.member_id,) if portal.member_id not in (None, key) else ()
        if self.topology.portal_queues:
            connection = _started(self.connection)
            queue = await declare_portal(connection, self.topology, key, aliases)
            self.backlog[key] = queue
        self.lanes.serve(key, portal)
        try:
            if self.topology.portal_queues:
                await self.consumers.add_portal(key, self.settings.portal_prefetch(portal))
        except BaseException:
            await self._drop(key)
            raise
        self._registered[key] = config
        self._aliases.update(dict.fromkeys(aliases, key))
        log.info("portal.added", portal=key, host=portal.host)
        self._check_open_files()

    def _check_open_files(self) -> None:
        """Warn, once, when the portals served may need more open files than the
        process may have: their calls would then wait for a descriptor, and the worker
        slow down."""
        if self._open_files is None or self._open_files_short:
            return
        s = self.settings
        needed = open_files_needed(
            len(self.lanes),
            portal_connections=s.PORTAL_CONNECTIONS,
            shared_limiter=self._redis is not None,
        )
        if self._open_files < needed:
            self._open_files_short = True
            log.warning(
                "open_files.low",
                limit=self._open_files,
                needed=needed,
                portals=len(self.lanes),
                hint=f"raise the worker's limit of open files ({WHERE_THE_LIMIT_IS_RAISED}, "
                "ulimit -n in a shell): calls past it cannot open a connection, and wait "
                "for one",
            )

    async def _remove_portal(self, key: str, *, drain: bool = False) -> None:
        """Stop serving ``key``: its calls out settle, what the worker held of its queue
        goes back there, and its lane, metrics and queue consumer are dropped."""
        # Its lane built if it had none: the commands that come until its consumer is
        # gone go back (`Pipeline.retire`), none fails as naming an unknown portal.
        lane = self.lanes.get(key)
        try:
            if lane is not None:
                try:
                    await lane.pipeline.retire()
                    await self.consumers.remove_portal(key)
                finally:
                    # The lane goes whatever failed: its deliveries went back with
                    # their channel if the broker was lost meanwhile.
                    await self._drop(key)
                log.info("portal.removed", portal=key)
            if drain:
                await self._drain_gone(key)
        except Exception as exc:
            log.error("portal.remove_failed", portal=key, error=str(exc))
            self._registry_version = None  # looked at again, and drained, next time

    async def _drop(self, key: str) -> None:
        # Its aliases stay: a command naming its member_id then ends as its key's would
        # (portal_gone when it is gone for good), and its queue keeps that binding.
        self.backlog.pop(key, None)
        await self.lanes.forget(key)

    async def _balance(self, every_s: float) -> None:
        """Hand busy portal queues over while this worker is the active consumer of
        more than its share of them, so that replicas share the portals' work.

        A worker that starts first claims every portal queue, and the others wait
        in line on each; nothing else moves a queue. Only queues with commands
        waiting on the broker count and move: every worker reads the same counts,
        so they agree on the share (those queues divided by the workers), and a
        queue whose last commands are in a worker's hands stays where it is. Each
        hand-over goes to the next worker in line; one that ends up above its
        share hands on in turn.
        """
        while True:
            await asyncio.sleep(every_s)
            try:
                replicas = await self.consumers.replicas()
            except Exception as exc:  # reconnecting: look again next time
                log.warning("portals.balance_unread", error=type(exc).__name__)
                continue
            if replicas < 2:
                continue
            await self._read_backlog()
            waiting = {key for key, ready in self.backlog.items() if ready > 0}
            busy = [key for key in self.consumers.active_portals() if key in waiting]
            share = -(-len(waiting) // replicas)
            excess = len(busy) - share
            if excess <= 0:
                continue
            # Not the default portal: its commands without a header come on the shared
            # queue, which every worker consumes. The least held first: the cheapest.
            pipelines = [
                self.lanes.pipelines[key]
                for key in busy
                if key != self.settings.B24_DEFAULT_PORTAL and key in self.lanes
            ]
            pipelines.sort(key=lambda pipeline: pipeline.held + pipeline.calls_out)
            handed: list[str] = []
            for pipeline in pipelines:
                if len(handed) == excess:
                    break
                try:
                    if await pipeline.hand_over():
                        handed.append(pipeline.portal)
                except Exception as exc:  # the broker lost: consumed again once reconnected
                    log.error("portal.hand_over_failed", portal=pipeline.portal, error=str(exc))
                    break
            if handed:
                log.info("portals.handed_over", portals=handed, replicas=replicas, share=share)

    async def _drain_gone(self, key: str) -> None:
        """Consume a gone portal's queue: the router ends each command as portal_gone."""
        if key not in self._gone or not self.topology.portal_queues:
            return
        await declare_portal(_started(self.connection), self.topology, key)
        await self.consumers.add_portal(key, self.settings.PREFETCH)
        log.info("portal.gone", portal=key, note="its commands end as portal_gone, never sent")

    async def _watch_backlog(self) -> None:
        """Keep `b24_queue_ready` and `backlog` current: each work queue's waiting
        commands (a lane's calls fill on through gaps while its queue has some).
        A reading made meanwhile (a balancing round's, /status') counts."""
        await read_every(self._read_backlog, lambda: self._queues_read_at, BACKLOG_EVERY_S)

    async def _read_backlog(self) -> None:
        topology, connection = self.topology, _started(self.connection)
        # The portals of this moment: some are registered or removed at run time.
        portal_of = {}
        queues = topology.work_queues
        if topology.portal_queues:
            portal_of = {topology.portal_queue(key): key for key in self.lanes}
            queues = (topology.update_queue, *portal_of)
        try:
            counts = await ready_counts(connection, queues)
        except Exception as exc:  # reconnecting: read again next time
            log.debug("backlog.unread", error=type(exc).__name__)
            return
        self.queues, self._queues_read_at = dict(counts), time.monotonic()
        for queue, ready in counts.items():
            portal = portal_of.get(queue, "")
            self.metrics.queue_ready.labels(queue, portal).set(ready)
            if portal:
                self.backlog[portal] = ready

    async def status(self) -> Status:
        """What /status shows: the worker, its portals, its queues, the running jobs.

        The queues are read again when the last reading is older than the page's
        refresh: however many people watch, at most one reading per REFRESH_S.
        """
        async with self._status_lock:
            if time.monotonic() - self._queues_read_at > REFRESH_S:
                await self._read_backlog()
        portals = []
        for key, portal in sorted(self.lanes.portals.items()):
            lane = self.lanes.built.get(key)  # none while idle: not built to be shown
            pipeline = lane.pipeline if lane is not None else None
            portals.append(
                PortalRow(
                    key=key,
                    state=(pipeline.down or "up") if pipeline is not None else "idle",
                    rate_per_second=portal.rate_per_second,
                    burst=portal.rate_burst,
                    waiting=self.backlog.get(key) if self.topology.portal_queues else None,
                    held=pipeline.held if pipeline is not None else 0,
                    calls_out=pipeline.calls_out if pipeline is not None else 0,
                )
            )
        jobs: list[JobRow] = []
        unread = None
        try:
            states = await self.ledger.store.jobs()
        except JobStoreError as exc:
            states, unread = [], str(exc)
        for state in states:
            if not state.done:
                jobs.append(
                    JobRow(
                        job=state.job,
                        ended=state.ended,
                        expected=state.expected,
                        succeeded=state.succeeded,
                        failed=sum(state.failed.values()),
                        rate=state.rate,
                        eta_s=state.eta_s,
                        aborting=state.aborted_at is not None,
                    )
                )
        connection = self.connection
        return Status(
            ready=self.readiness.reason(),
            node=connection.node if isinstance(connection, NodesConnection) else "-",
            uptime_s=time.monotonic() - self._started_at,
            portals=portals,
            queues=dict(self.queues),
            queues_read_s=time.monotonic() - self._queues_read_at,
            jobs=jobs,
            jobs_unread=unread,
        )

    async def drain(self) -> None:
        """Stop consuming, finish what is in flight within DRAIN_TIMEOUT_S, then close.

        Nothing is handed back one by one: a command whose call is still out
        stays unacked until the connection closes, and a command given back
        before it would be delivered before it next time. The consumers hold
        back what arrives (they are not cancelled), and closing the connection
        returns every unacked delivery at once, in the order they were
        delivered (tests/worker/amqp/test_returns.py).
        """
        if self._consumers is not None:
            with contextlib.suppress(Exception):
                await self._consumers.stop()
        if self.lanes.built:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(lane.pipeline.drain() for lane in self.lanes.built.values())),
                    self.settings.DRAIN_TIMEOUT_S,
                )
            except TimeoutError:
                log.warning(
                    "worker.drain_timeout",
                    note="calls still out; their commands go back to the queue unsettled",
                )
            # A moment after the last ack lets the broker apply it before the close.
            await self.acks.landed()
        for task in [*self._tasks, *self._retiring]:
            task.cancel()
        if self._registry is not None:
            with contextlib.suppress(Exception):
                await self._registry.close()
        with contextlib.suppress(Exception):
            await self.ledger.close()
        # The broker before the portal client: a call still out must not end, as
        # the client closes, in a retry copy published and acked after the drain.
        if self._consumers is not None:
            await self._consumers.close_connections()
        if self._publisher is not None:
            await self._publisher.close()
        if self.connection is not None:
            await self.connection.close()
        await self.lanes.close()
        if self._token_http is not None:
            await self._token_http.aclose()
        if self._health is not None:
            await self._health.stop()
        elif self._listening is not None:
            self._listening.close()  # never served: the start ended first
        if self._app_events is not None:
            await self._app_events.stop()
        elif self._install_listening is not None:
            self._install_listening.close()
        if self._app_events_http is not None:
            await self._app_events_http.aclose()
        if self._redis is not None:
            await self._redis.aclose()


async def run(settings: Settings) -> int:
    """Run until a stop signal; return the process exit code."""
    mask = SecretMask(settings.secrets())
    configure_logging(level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT, mask=mask)
    configured = set(settings.portals())
    try:
        settings = await with_registry(settings)
    except RegistryError as exc:
        log.error("registry.unusable", error=str(exc))
        return 2
    mask.add(*settings.secrets())
    tracing.configure()
    if not settings.has_portal:
        log.error(
            "config.no_portal",
            hint="set B24_WEBHOOK_URL, or the OAuth variables, or add one: b24-worker portals add",
        )
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    files = raise_open_files_limit()
    open_files = files[1] if files is not None else None
    broker = redact_url(settings.AMQP_URL.get_secret_value())
    for tries_left in reversed(range(START_TRIES)):
        worker = Worker(settings, mask=mask, configured=configured, open_files=open_files)
        code = await _start(worker, broker, again=tries_left > 0)
        if code != _START_AGAIN:
            break
        await asyncio.sleep(START_AGAIN_AFTER_S)
    if code is not None:
        return code
    log.info("worker.started", broker=broker, open_files=open_files, settings=settings.describe())
    await stop.wait()
    log.info("worker.stopping", drain_timeout_s=settings.DRAIN_TIMEOUT_S)
    await worker.drain()
    tracing.shutdown()
    log.info("worker.stopped")
    return 0


_START_AGAIN = -1


async def _start(worker: Worker, broker: str, *, again: bool) -> int | None:
    """Start ``worker``: None once started; otherwise, the reason logged and the
    worker drained, the exit code, or `_START_AGAIN` (``again``: the broker broke
    the start off, and it is tried again).

    A start the broker breaks off with an internal error (541, the connection
    closed) loses nothing: no command was settled, and what the consumers took
    goes back as the connection closes.
    """
    try:
        await worker.start()
    except TopologyError as exc:
        log.error("broker.topology", error=str(exc))
        await worker.drain()
        return 1
    except AiormqIncompatibleError as exc:
        log.error("amqp.incompatible", error=str(exc))
        await worker.drain()
        return 1
    except PortUnavailableError as exc:
        log.error("http.port_unavailable", error=str(exc), hint="set another port")
        await worker.drain()
        return 1
    except aiormq.exceptions.ChannelAccessRefused as exc:
        # The broker's words name the queue or exchange, and the user: no secret.
        log.error(
            "broker.access_refused",
            broker=broker,
            error=str(exc),
            hint="give AMQP_URL's user the permissions the worker needs on its queues "
            "and exchanges (b24-worker check tries each one)",
        )
        await worker.drain()
        return 1
    except aiormq.exceptions.ConnectionInternalError as exc:
        await worker.drain()
        if again:
            log.warning(
                "broker.start_interrupted",
                broker=broker,
                error=str(exc),
                note=f"started again in {START_AGAIN_AFTER_S:g} s",
            )
            return _START_AGAIN
        log.error(
            "broker.start_interrupted",
            broker=broker,
            error=str(exc),
            hint=f"the broker broke off all {START_TRIES} starts with an internal error: "
            "its log says why",
        )
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
    except Exception as exc:
        # Anything else that stops the start: one log line, its traceback inside and
        # masked like every line, rather than bare text among JSON lines.
        log.exception("worker.start_failed", error=type(exc).__name__)
        await worker.drain()
        return 1
    return None
