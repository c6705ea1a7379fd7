"""One portal's lane: its client, limiter, breaker, definitions and pipeline.

Each lane has an HTTP connection pool of its own, as many connections as it
has calls out at most (and one for a probe): a slow portal, whose answers take
up to B24_TIMEOUT_S, holds only its own connections.

`build_lane` makes a lane from a `Portal` of the settings. With a Redis (the
LIMITER_URL), the request bucket, the operating budget and the field
definitions are shared, under the portal's host, by every replica serving it.

`Lanes` holds the portals served and builds a portal's lane at its first
command; a lane idle for LANE_IDLE_S is dropped. What must outlive a lane stays
with the portal: its `Auth` (an OAuth token, and where the portal moved), whose
refresh token is kept alive whether the portal has a lane or not.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from worker.amqp.acks import Acks
from worker.amqp.publishing import Publisher
from worker.amqp.topology import Topology
from worker.bitrix import (
    KEEPALIVE_EXPIRY_S,
    Auth,
    BitrixClient,
    CommandAnswer,
    OAuthAuth,
    PortalError,
    close_expired_connections,
    make_http_client,
)
from worker.credentials import build_auth
from worker.flow.batching import linger_for
from worker.flow.breaker import Breaker
from worker.flow.calling import METHOD, Caller
from worker.flow.classify import classify
from worker.flow.definitions import DefinitionsCache, FieldDefinitions
from worker.flow.jobs import ItemKey
from worker.flow.ledger import Ledger
from worker.flow.outcomes import Outcomes
from worker.flow.pipeline import MAX_CALLS_IN_FLIGHT, Consumption, Pipeline
from worker.flow.readback import ReadBack
from worker.limiter import CallLimiter, FirstCalls, OperatingBudget, RequestPacer, SystemClock
from worker.observability.logging import SecretMask
from worker.observability.metrics import Metrics
from worker.observability.observer import MetricsObserver
from worker.settings import Portal, Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from worker.limiter.shared import SharedBackends

__all__ = ["Lane", "Lanes", "build_lane", "keep_token_alive"]

log = structlog.get_logger("worker.runtime.lanes")

# How often an OAuth portal's refresh token is checked for its age, and how soon
# after the start the first time at the latest.
TOKEN_CHECK_EVERY_S = 3600.0
TOKEN_FIRST_CHECK_WITHIN_S = 600.0

# Seconds of the portal's drain its bucket keeps empty (see RequestPacer): how
# much earlier than planned, against those before it, a request may arrive.
LOCAL_HEADROOM_S = 0.1
SHARED_HEADROOM_S = 0.25


@dataclass
class Lane:
    """One portal's path: its pipeline, and what it holds that must be closed."""

    portal: Portal
    pipeline: Pipeline
    definitions: FieldDefinitions
    http: httpx.AsyncClient
    limiter: SharedBackends | None = None  # None: the limiter's state is in this process

    async def run(self) -> None:
        """The pipeline, and its idle connections let go, until cancelled."""
        await asyncio.gather(self.pipeline.run(), self._let_go_of_idle_connections())

    async def _let_go_of_idle_connections(self) -> None:
        """Close the portal's connections idle past their keep-alive expiry: a portal
        done with its calls would otherwise hold up to MAX_CALLS_IN_FLIGHT + 1 file
        descriptors for good, which the busy portals may be short of."""
        while True:
            await asyncio.sleep(KEEPALIVE_EXPIRY_S)
            try:
                await close_expired_connections(self.http)
            except Exception:  # never the lane's end: the pool closes them when next used
                log.exception("http.close_idle_failed", portal=self.portal.key)

    async def close(self) -> None:
        await self.pipeline.close()
        await self.definitions.close()
        await self.http.aclose()


def build_lane(
    settings: Settings,
    portal: Portal,
    *,
    publisher: Publisher,
    acks: Acks,
    consumption: Consumption,
    topology: Topology,
    tls: ssl.SSLContext,
    metrics: Metrics,
    mask: SecretMask | None = None,
    redis: Redis | None = None,
    backlog: Mapping[str, int] | None = None,
    ledger: Ledger | None = None,
    first_calls: FirstCalls | None = None,
    auth: Auth | None = None,
) -> Lane:
    """The lane of ``portal``: its pipeline settles through the worker's one
    ``publisher`` and ``acks`` and holds back ``consumption`` while the portal is down.

    ``backlog`` is the commands waiting in each portal's queue by portal key, as
    last read from the broker (the worker keeps it current). ``first_calls``:
    the portals that started with commands waiting, each to make a first call
    before any makes a second. ``auth``: the portal's, kept by `Lanes` from one lane
    of it to the next (built here without).
    """
    waiting = backlog if backlog is not None else {}
    observer = MetricsObserver(metrics, portal=portal.key)
    http = make_http_client(
        timeout_s=settings.B24_TIMEOUT_S, max_connections=MAX_CALLS_IN_FLIGHT + 1, verify=tls
    )
    clock = SystemClock()
    # With LIMITER_URL the bucket and the budget live in Redis under the portal's
    # member_id, or its host: every replica (and deployment) serving it shares them.
    shared: SharedBackends | None = None
    cache: DefinitionsCache | None = None
    if redis is not None:
        # Imported here: a worker without LIMITER_URL never loads the Redis client.
        from worker.flow.redis_definitions import RedisDefinitionsCache
        from worker.limiter.shared import shared_backends

        shared = shared_backends(redis, scope=portal.identity)
        cache = RedisDefinitionsCache(redis, scope=portal.identity)
    pacer = RequestPacer(
        burst=portal.rate_burst,
        rate_per_s=portal.rate_per_second,
        reserve=portal.rate_reserve,
        clock=clock,
        backend=shared.pacer if shared else None,
        # Requests of several processes reach the portal with lags that differ
        # more than one process's do: keep more of the bucket empty.
        headroom_s=SHARED_HEADROOM_S if shared else LOCAL_HEADROOM_S,
        turn=first_calls.turn(portal.key) if first_calls is not None else None,
    )
    budget = OperatingBudget(
        limit_s=portal.operating_limit_s,
        window_s=portal.operating_window_s,
        clock=clock,
        backend=shared.budget if shared else None,
    )
    if auth is None:
        auth = build_auth(settings, portal, http=http, mask=mask, redis=redis)
    client = BitrixClient(http=http, auth=auth)
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

    # Replicas share the answers of crm.item.fields: each is asked of the portal once.
    definitions = FieldDefinitions(client=paced, clock=clock, cache=cache)
    limiter = CallLimiter(method=METHOD, budget=budget, pacer=pacer)
    pipeline = Pipeline(
        portal=portal.key,
        outcomes=Outcomes(
            publisher=publisher,
            acks=acks,
            topology=topology,
            max_attempts=settings.MAX_ATTEMPTS,
            observer=observer,
            max_message_bytes=settings.MAX_MESSAGE_BYTES,
            portal=portal.key,
            ledger=ledger,
        ),
        limiter=limiter,
        caller=Caller(client=client, limiter=limiter, observer=observer),
        breaker=Breaker(probe=probe, name=portal.key),
        consumption=consumption,
        observer=observer,
        topology=topology,
        max_message_bytes=settings.MAX_MESSAGE_BYTES,
        batch_size=settings.BATCH_SIZE,
        linger_s=linger_for(settings.BATCH_LINGER_MS / 1000, portal.rate_per_second),
        definitions=definitions,
        backlog=lambda: waiting.get(portal.key, 0) > 0,
        ledger=ledger,
        read_back=ReadBack(paced, after_s=settings.B24_READ_BACK_AFTER_S)
        if settings.B24_READ_BACK_AFTER_S > 0
        else None,
        coalesce=settings.COALESCE == "safe",
    )
    return Lane(portal, pipeline, definitions, http, shared)


async def keep_token_alive(
    key: str, auth: OAuthAuth, *, max_age_s: float, metrics: Metrics
) -> None:
    """Renew portal ``key``'s OAuth refresh token once older than ``max_age_s``
    (B24_TOKEN_RENEW_DAYS): a portal with no commands makes no call that would, and
    the cloud lets it lapse after 28 days. Checked once an hour, the first time
    within ten minutes of the start (spread, so that a thousand portals do not
    renew at once); ``b24_token_renewal_failed`` says whether the last try failed."""
    await asyncio.sleep(random.uniform(0, TOKEN_FIRST_CHECK_WITHIN_S))  # noqa: S311
    failed = metrics.token_renewal_failed.labels(key)
    while True:
        try:
            renewed = await auth.keep_alive(max_age_s)
        except Exception as exc:
            failed.set(1)
            log.error("oauth.renewal_failed", portal=key, error=str(exc))
        else:
            failed.set(0)
            if renewed:
                log.info("oauth.renewed", portal=key, note="before it lapses")
        await asyncio.sleep(TOKEN_CHECK_EVERY_S)


# How often built lanes are looked at for being idle, at most.
IDLE_CHECK_EVERY_S = 30.0


class Lanes(Mapping[str, Lane]):
    """The portals served, by key, and the lanes built for them.

    Looking a served portal up (``lanes[key]``, ``lanes.get(key)``, as the router
    does through `pipelines`) builds its lane if it has none: a portal's lane
    is built at its first command. ``key in lanes``, ``len`` and iterating
    name the portals served, lane or not; `built` holds the lanes there are.

    A lane whose pipeline has had nothing in its care for ``idle_s`` (0: never)
    is dropped by `drop_idle`, and its series with it. With the limiter's state
    in this process (``shared_limiter`` false) a lane is kept at least as long
    as the portal remembers its calls, its operating window and the time its
    request bucket takes to drain: a lane built again then starts from what the
    portal counts too. Its `Auth` stays with the portal.
    """

    def __init__(
        self,
        build: Callable[[Portal, Auth], Lane],
        auth: Callable[[Portal], Auth],
        *,
        metrics: Metrics,
        idle_s: float,
        shared_limiter: bool,
        token_max_age_s: float,
    ) -> None:
        """``build``: a portal's lane, given its auth; ``auth``: a portal's, built when
        it is served (credentials that cannot be used fail there, not at a command)."""
        self._build = build
        self._make_auth = auth
        self._metrics = metrics
        self._idle_s = idle_s
        self._shared_limiter = shared_limiter
        self._token_max_age_s = token_max_age_s
        self.portals: dict[str, Portal] = {}
        self.built: dict[str, Lane] = {}
        self.pipelines: Mapping[str, Pipeline] = _Pipelines(self)
        self._auths: dict[str, Auth] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._keeping: dict[str, asyncio.Task[None]] = {}

    def __getitem__(self, key: str) -> Lane:
        lane = self.built.get(key)
        if lane is not None:
            return lane
        portal = self.portals[key]  # KeyError: not served
        lane = self.built[key] = self._build(portal, self._auths[key])
        self._running[key] = asyncio.create_task(lane.run())
        return lane

    def __contains__(self, key: object) -> bool:
        return key in self.portals

    def __iter__(self) -> Iterator[str]:
        return iter(self.portals)

    def __len__(self) -> int:
        return len(self.portals)

    def serve(self, key: str, portal: Portal) -> None:
        """Serve ``portal`` as ``key``: its auth is built now, the same for every lane
        of it, and its lane comes with its first command; an OAuth portal's refresh
        token is kept alive from now on."""
        auth = self._make_auth(portal)
        self.portals[key], self._auths[key] = portal, auth
        if isinstance(auth, OAuthAuth):
            self._keeping[key] = asyncio.create_task(
                keep_token_alive(key, auth, max_age_s=self._token_max_age_s, metrics=self._metrics)
            )

    async def forget(self, key: str) -> None:
        """Serve ``key`` no more: its lane closed, its series removed."""
        self.portals.pop(key, None)
        self._auths.pop(key, None)
        keeping = self._keeping.pop(key, None)
        if keeping is not None:
            keeping.cancel()
        lane = self._unbuild(key)
        self._metrics.forget_portal(key)
        if lane is not None:
            await lane.close()

    def idle_for(self, portal: Portal) -> float:
        """How long ``portal``'s lane may be idle before it is dropped (0: never)."""
        if self._idle_s <= 0 or self._shared_limiter:
            return self._idle_s
        drained_s = portal.rate_burst / portal.rate_per_second
        return max(self._idle_s, portal.operating_window_s, drained_s)

    async def drop_idle(self) -> list[str]:
        """Drop the lanes idle for their `idle_for`; the portals whose lane went."""
        now = time.monotonic()
        idle = []
        for key, lane in self.built.items():
            since, keep_s = lane.pipeline.idle_since(), self.idle_for(lane.portal)
            if since is not None and keep_s > 0 and now - since >= keep_s:
                idle.append(key)
        # Out of the table before the first await: a command coming meanwhile builds
        # a new lane, and no series of that one is removed.
        dropped = [self._unbuild(key) for key in idle]
        for key in idle:
            self._metrics.forget_lane(key)
        for closing in dropped:
            if closing is not None:
                await closing.close()
        return idle

    async def watch_idle(self) -> None:
        """Drop idle lanes, looking about four times per LANE_IDLE_S, until cancelled."""
        if self._idle_s <= 0:
            return
        every_s = min(self._idle_s / 4, IDLE_CHECK_EVERY_S)
        while True:
            await asyncio.sleep(every_s)
            try:
                dropped = await self.drop_idle()
            except Exception:  # a lane that failed to close is gone all the same
                log.exception("lanes.drop_failed")
                continue
            if dropped:
                log.info("lanes.dropped", portals=len(dropped), lanes=len(self.built))

    def _unbuild(self, key: str) -> Lane | None:
        lane = self.built.pop(key, None)
        running = self._running.pop(key, None)
        if running is not None:
            running.cancel()
        return lane

    async def close(self) -> None:
        """The worker is stopping: every lane closed, no token kept alive."""
        for task in [*self._keeping.values(), *self._running.values()]:
            task.cancel()
        for key in list(self.built):
            closing = self._unbuild(key)
            if closing is not None:
                await closing.close()


class _Pipelines(Mapping[str, Pipeline]):
    """The pipelines of `Lanes`' portals; looking one up builds its lane."""

    def __init__(self, lanes: Lanes) -> None:
        self._lanes = lanes

    def __getitem__(self, key: str) -> Pipeline:
        return self._lanes[key].pipeline

    def __contains__(self, key: object) -> bool:
        return key in self._lanes

    def __iter__(self) -> Iterator[str]:
        return iter(self._lanes)

    def __len__(self) -> int:
        return len(self._lanes)


class _Paced:
    """A client whose single calls wait for the request bucket first."""

    def __init__(self, client: BitrixClient, pacer: RequestPacer) -> None:
        self._client = client
        self._pacer = pacer

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CommandAnswer:
        await self._pacer.acquire()
        return await self._client.call(method, params)

    async def items(self, keys: Sequence[ItemKey]) -> dict[ItemKey, dict[str, Any] | None]:
        """Items read in one ``batch`` of crm.item.get (read back); an item the portal
        does not have is None, any other error raises."""
        await self._pacer.acquire()
        answer = await self._client.batch(
            {
                f"r{n}": ("crm.item.get", {"entityTypeId": t, "id": i})
                for n, (t, i) in enumerate(keys)
            }
        )
        found: dict[ItemKey, dict[str, Any] | None] = {}
        for n, key in enumerate(keys):
            command = answer.commands[f"r{n}"]
            if command.error is not None and command.error.code == "NOT_FOUND":
                found[key] = None
            elif command.error is not None or not command.ran:
                raise RuntimeError(f"crm.item.get {key}: {command.error or 'not run'}")
            else:
                result = command.result
                item = result.get("item") if isinstance(result, dict) else None
                found[key] = item if isinstance(item, dict) else None
        return found
