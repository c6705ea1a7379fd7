"""One portal's lane: its client, limiter, breaker, definitions and pipeline.

Each lane has an HTTP connection pool of its own, as many connections as it
has calls out at most (and one for a probe or a token refresh): a slow portal,
whose answers take up to B24_TIMEOUT_S, holds only its own connections.

`build_lane` makes a lane from a `Portal` of the settings. With a Redis (the
LIMITER_URL), the request bucket, the operating budget and the field
definitions are shared, under the portal's host, by every replica serving it.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Mapping, Sequence
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

__all__ = ["Lane", "build_lane"]

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
    auth: Auth | None = None
    metrics: Metrics | None = None
    token_max_age_s: float = 14 * 86_400.0

    async def run(self) -> None:
        """The pipeline, its idle connections let go, and with OAuth the refresh token
        kept alive, until cancelled."""
        await asyncio.gather(
            self.pipeline.run(), self._let_go_of_idle_connections(), self._keep_token_alive()
        )

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

    async def _keep_token_alive(self) -> None:
        """Renew an OAuth refresh token older than B24_TOKEN_RENEW_DAYS: a portal with
        no commands makes no call that would, and the cloud lets it lapse after 28
        days. Checked once an hour, the first time within ten minutes of the start
        (spread, so that a thousand portals do not renew at once)."""
        auth = self.auth
        if not isinstance(auth, OAuthAuth):
            return
        await asyncio.sleep(random.uniform(0, TOKEN_FIRST_CHECK_WITHIN_S))  # noqa: S311
        while True:
            try:
                renewed = await auth.keep_alive(self.token_max_age_s)
            except Exception as exc:
                self._token_renewal_failed(1)
                log.error("oauth.renewal_failed", portal=self.portal.key, error=str(exc))
            else:
                self._token_renewal_failed(0)
                if renewed:
                    log.info("oauth.renewed", portal=self.portal.key, note="before it lapses")
            await asyncio.sleep(TOKEN_CHECK_EVERY_S)

    def _token_renewal_failed(self, value: int) -> None:
        if self.metrics is not None:
            self.metrics.token_renewal_failed.labels(self.portal.key).set(value)

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
) -> Lane:
    """The lane of ``portal``: its pipeline settles through the worker's one
    ``publisher`` and ``acks`` and holds back ``consumption`` while the portal is down.

    ``backlog`` is the commands waiting in each portal's queue by portal key, as
    last read from the broker (the worker keeps it current). ``first_calls``:
    the portals that started with commands waiting, each to make a first call
    before any makes a second.
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
    return Lane(
        portal,
        pipeline,
        definitions,
        http,
        shared,
        auth=auth,
        metrics=metrics,
        token_max_age_s=settings.B24_TOKEN_RENEW_DAYS * 86_400.0,
    )


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
