"""`b24-worker check`: can the worker start here? One line per check.

    settings   the environment as the worker reads it (a bad value is named)
    open files the most this process's environment allows (the worker raises its
               soft limit to it), against what the configured portals may need:
               a PROBLEM when it is short of that
    running worker  with HTTP_PORT set, a worker already answering on it here
               (`kubectl exec`, `docker compose exec`): its own open files against
               its own limit, from its /metrics; a PROBLEM above 80%. A check run
               elsewhere than the worker reads only its own process's limit above
    broker     a connection to AMQP_URL
    exchange   with SHARDS > 0: the consistent-hash exchange UPDATE_QUEUE, present
               as the worker needs it, or missing while the broker has the
               exchange type (a PROBLEM, naming the plugin, when it does not)
    ...claim   with SHARDS > 0: the user may declare a shard's claim lock (an
               exclusive queue, deleted at once)
    queue ...  each queue the worker uses: present with the worker's arguments,
               missing (the worker declares it at start), or present with other
               arguments (the worker would refuse to start)
    leftovers  a shard queue past the last one (SHARDS was larger), or with
               SHARDS > 0 a queue named UPDATE_QUEUE from before: a line only
               when there is one, always a PROBLEM
    portal     one cheap call, crm.item.fields for deals, with the configured
               webhook or OAuth application: credentials, crm scope, reachability

Exit code 0 when every line is OK, 1 otherwise. No line carries a secret: URLs
are shown redacted and every line passes through the worker's log mask. With
OAuth, the call renews the access token through the worker's own token store.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import aio_pika
import aiormq
import httpx
from aio_pika.abc import AbstractConnection
from prometheus_client.parser import text_string_to_metric_families

from worker.amqp.nodes import bare_channel
from worker.amqp.topology import (
    HASH_EXCHANGE_TYPE,
    Topology,
    TopologyError,
    claim_lock,
    declare_claim_lock,
    declare_exchange,
    refuse_leftover_portals,
    refuse_leftover_shard,
    release_claim_lock,
)
from worker.bitrix import (
    BitrixClient,
    NoAnswerError,
    PortalError,
    TokenRenewalError,
    UnexpectedAnswerError,
    make_http_client,
)
from worker.credentials import build_auth
from worker.observability.logging import SecretMask
from worker.observability.openfiles import (
    WHERE_THE_LIMIT_IS_RAISED,
    hard_open_files_limit,
    open_files_needed,
)
from worker.settings import ConfigError, Portal, Settings, load_settings, redact_url
from worker.tools.broker import ToolError, connect, exists

__all__ = ["Finding", "run_checks"]

_PORTAL_TIMEOUT_S = 20.0
_METRICS_TIMEOUT_S = 2.0
# A share of the limit the running worker's open files should stay under: the
# alert B24WorkerOpenFilesNearLimit fires above it.
_OPEN_FILES_NEAR_LIMIT = 0.8
_BAD_CREDENTIALS = frozenset(
    {"NO_AUTH_FOUND", "INVALID_CREDENTIALS", "invalid_token", "expired_token", "user_access_error"}
)


@dataclass(frozen=True)
class Finding:
    subject: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'PROBLEM':<8}{self.subject}: {self.detail}"


async def run_checks(*, out: TextIO) -> int:
    """Print one line per check; 0 when all are OK."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(Finding("settings", False, str(exc)), file=out)
        print(Finding("broker, queues, portal", False, "not checked (settings first)"), file=out)
        return 1
    mask = SecretMask(settings.secrets())
    findings: list[Finding] = []

    def say(finding: Finding) -> None:
        findings.append(finding)
        print(mask(str(finding)), file=out)

    say(Finding("settings", True, _describe(settings)))
    _check_open_files(settings, say)
    await _check_running_worker(settings, say)
    await _check_broker(settings, say)
    await _check_portal(settings, mask, say)
    return 0 if all(finding.ok for finding in findings) else 1


def _describe(settings: Settings) -> str:
    portals = settings.portals()
    shown = [
        _kind(portal) if len(portals) == 1 else f"{key}: {_kind(portal)}"
        for key, portal in portals.items()
    ]
    return f"broker {redact_url(settings.AMQP_URL.get_secret_value())}, " + (
        ", ".join(shown) or "no portal"
    )


def _where(portal: Portal) -> str:
    """The portal's address, its webhook code hidden."""
    if portal.webhook_url is not None:
        return redact_url(portal.webhook_url.get_secret_value())
    return portal.portal_url or ""


def _kind(portal: Portal) -> str:
    if portal.webhook_url is not None:
        return f"webhook {_where(portal)}"
    return f"OAuth application at {_where(portal)}"


def _check_open_files(settings: Settings, say: Callable[[Finding], None]) -> None:
    limit = hard_open_files_limit()
    if limit is None:  # pragma: no cover - not a POSIX system
        return
    portals = len(settings.portals())
    needed = open_files_needed(
        portals,
        portal_connections=settings.PORTAL_CONNECTIONS,
        shared_limiter=bool(settings.LIMITER_URL.get_secret_value()),
    )
    detail = (
        f"up to {limit} (the worker raises its soft limit to this hard one); "
        f"{portals} portal{'' if portals == 1 else 's'} may need about {needed}"
    )
    if limit < needed:
        detail += (
            f": raise the hard limit ({WHERE_THE_LIMIT_IS_RAISED}), "
            "or calls past it wait for a descriptor"
        )
    say(Finding("open files", limit >= needed, detail))


async def _check_running_worker(settings: Settings, say: Callable[[Finding], None]) -> None:
    """The worker answering on HTTP_PORT on this machine, if one does: its open files
    against its limit, as its /metrics reads them from its own process."""
    if not settings.HTTP_PORT:
        return
    where = f"127.0.0.1:{settings.HTTP_PORT}"
    try:
        async with httpx.AsyncClient(timeout=_METRICS_TIMEOUT_S) as http:
            answer = await http.get(f"http://{where}/metrics")
    except httpx.HTTPError:
        say(Finding("running worker", True, f"none answers on {where}"))
        return
    found = _open_files_on(answer.text) if answer.status_code == 200 else None
    if found is None:
        detail = f"{where} answers, but not with a worker's open files on /metrics"
        say(Finding("running worker", True, detail))
        return
    opened, limit = found
    share = opened / limit
    detail = f"{where} holds {opened:.0f} of the {limit:.0f} open files it may ({share:.0%})"
    near = share > _OPEN_FILES_NEAR_LIMIT
    if near:
        detail += (
            f": raise its hard limit ({WHERE_THE_LIMIT_IS_RAISED}) "
            "before its calls wait for a descriptor"
        )
    say(Finding("running worker", not near, detail))


def _open_files_on(page: str) -> tuple[float, float] | None:
    """(open files, their limit) from a Prometheus text page; None without both."""
    try:
        read = {
            sample.name: sample.value
            for family in text_string_to_metric_families(page)
            for sample in family.samples
        }
    except ValueError:  # not Prometheus's text format
        return None
    opened, limit = read.get("process_open_fds"), read.get("process_max_fds")
    if opened is None or not limit:
        return None
    return opened, limit


async def _check_broker(settings: Settings, say: Callable[[Finding], None]) -> None:
    url = settings.AMQP_URL.get_secret_value()
    try:
        connection = await connect(url)
    except ToolError as exc:
        say(Finding("broker", False, str(exc)))
        return
    topology = settings.topology()
    async with connection:
        say(Finding("broker", True, f"connected to {redact_url(url)}"))
        if topology.shards:
            say(await _check_exchange(url, topology))
            say(await _check_claim_lock(connection, topology))
        if topology.portal_queues:
            say(await _check_portal_exchange(connection, topology))
        for name, arguments in topology.queues().items():
            say(await _check_queue(connection, name, arguments))
        try:
            await refuse_leftover_shard(connection, topology)
        except TopologyError as exc:
            say(Finding(f"queue {topology.shard_queue(topology.shards)}", False, str(exc)))
        try:
            await refuse_leftover_portals(connection, topology)
        except TopologyError as exc:
            say(Finding(f"exchange {topology.unrouted_exchange}", False, str(exc)))
        if topology.shards:
            unused = await _unused_update_queue(connection, topology)
            if unused is not None:
                say(unused)


async def _check_exchange(url: str, topology: Topology) -> Finding:
    """On a connection of its own: a missing exchange type closes the whole connection."""
    name = topology.update_queue
    subject = f"exchange {name}"
    connection = await connect(url)
    async with connection:
        present = await exists(connection, name, exchange=True)
        # Declared as the worker declares it: no change when it matches. When it is
        # missing, a throwaway exchange of the type shows whether the broker has it.
        probe = name if present else f"b24-worker.check.{uuid.uuid4().hex}"
        try:
            await declare_exchange(connection, dataclasses.replace(topology, update_queue=probe))
        except TopologyError as exc:
            return Finding(subject, False, str(exc).replace(probe, name))
        if not present:
            channel = await connection.channel()
            await channel.exchange_delete(probe)
            await channel.close()
            return Finding(
                subject,
                True,
                f"missing; the worker declares it when it starts (the broker has the "
                f"{HASH_EXCHANGE_TYPE} exchange type)",
            )
    return Finding(
        subject, True, f"{HASH_EXCHANGE_TYPE}, as the worker needs, for {topology.shards} shards"
    )


async def _check_claim_lock(connection: AbstractConnection, topology: Topology) -> Finding:
    """Each shard is claimed under an exclusive queue named after it: may this user
    declare one? (Tried on the first shard's, and deleted at once.)"""
    shard = topology.shard_queue(0)
    subject = f"queue {claim_lock(shard)}"
    try:
        async with bare_channel(connection) as channel:
            await declare_claim_lock(channel, shard)
            await release_claim_lock(channel, shard)
    except aiormq.exceptions.ChannelLockedResource:
        return Finding(subject, True, "held by a worker claiming that shard right now")
    except aiormq.exceptions.ChannelAccessRefused as exc:
        return Finding(
            subject,
            False,
            f"{exc}: the worker claims each shard under the exclusive queue "
            f"<shard>.claim; give its RabbitMQ user the configure permission on those names",
        )
    return Finding(subject, True, "may be declared: each shard is claimed under such a lock")


async def _check_portal_exchange(connection: AbstractConnection, topology: Topology) -> Finding:
    name = topology.update_queue
    if not await exists(connection, name, exchange=True):
        return Finding(f"exchange {name}", True, "missing; the worker declares it when it starts")
    return Finding(
        f"exchange {name}",
        True,
        f"present: producers publish here, and it routes each command to its portal's "
        f"queue ({len(topology.portals)} portals)",
    )


async def _unused_update_queue(
    connection: AbstractConnection, topology: Topology
) -> Finding | None:
    """A queue named UPDATE_QUEUE, from before SHARDS: workers with shards never consume it."""
    name = topology.update_queue
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()
    ready = declared.declaration_result.message_count or 0
    return Finding(
        f"queue {name}",
        False,
        f"exists with {ready} ready, from before SHARDS={topology.shards}: the workers "
        "consume it too while it exists, but commands published to it keep no order across "
        f"workers. Point every producer at the exchange {name!r}, then delete the queue "
        "once it is empty",
    )


async def _check_queue(
    connection: AbstractConnection, name: str, arguments: dict[str, Any]
) -> Finding:
    subject = f"queue {name}"
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return Finding(subject, True, "missing; the worker declares it when it starts")
    finally:
        if not channel.is_closed:
            await channel.close()
    ready = declared.declaration_result.message_count or 0
    # The queue exists: declaring it with the worker's arguments changes nothing
    # when they match, and fails with 406 naming an argument when they do not.
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        return Finding(
            subject,
            False,
            f"exists with other arguments than the worker needs ({_inequivalent(exc)}): the "
            "worker will refuse to start; move its messages away and delete it, or use "
            "other queue names",
        )
    finally:
        if not channel.is_closed:
            await channel.close()
    return Finding(
        subject, True, f"{arguments['x-queue-type']}, as the worker needs; {ready} ready"
    )


def _inequivalent(exc: BaseException) -> str:
    text = str(exc)
    start = text.find("inequivalent arg")
    if start < 0:
        return "PRECONDITION_FAILED"
    end = text.find("'", text.find("'", start) + 1)
    return text[start : end + 1]


async def _check_portal(
    settings: Settings, mask: SecretMask, say: Callable[[Finding], None]
) -> None:
    portals = settings.portals()
    if not portals:
        missing = "none configured: set B24_WEBHOOK_URL, the four OAuth variables or B24_PORTALS"
        say(Finding("portal", False, missing))
        return
    for portal in portals.values():
        await _check_one_portal(settings, portal, mask, say, named=len(portals) > 1)


async def _check_one_portal(
    settings: Settings,
    portal: Portal,
    mask: SecretMask,
    say: Callable[[Finding], None],
    *,
    named: bool,
) -> None:
    where = _where(portal)
    if named:
        where = f"{portal.key} {where}"
    timeout_s = min(settings.B24_TIMEOUT_S, _PORTAL_TIMEOUT_S)
    async with make_http_client(timeout_s=timeout_s) as http:
        auth = build_auth(settings, portal, http=http, mask=mask)
        client = BitrixClient(http=http, auth=auth)
        try:
            answer = await client.call("crm.item.fields", {"entityTypeId": 2})
        except PortalError as exc:
            say(Finding("portal", False, f"{where}: {_portal_problem(exc)}"))
            return
        except NoAnswerError as exc:
            say(Finding("portal", False, f"unreachable: {exc.kind} talking to {where}"))
            return
        except UnexpectedAnswerError as exc:
            say(
                Finding(
                    "portal",
                    False,
                    f"{where} answered, but not as a Bitrix24 portal (HTTP {exc.status}): "
                    "is the URL right?",
                )
            )
            return
        except TokenRenewalError as exc:
            say(Finding("portal", False, f"OAuth tokens cannot be renewed: {exc}"))
            return
    result = answer.result
    fields = result.get("fields", {}) if isinstance(result, dict) else {}
    say(
        Finding(
            "portal",
            True,
            f"{where}: crm.item.fields answered ({len(fields)} deal fields); "
            "credentials and crm scope work",
        )
    )


def _portal_problem(exc: PortalError) -> str:
    code, status = exc.code, exc.status
    if code == "insufficient_scope":
        return (
            "the credentials work but lack the crm scope (insufficient_scope): give the "
            "webhook or application the CRM permission"
        )
    if code in _BAD_CREDENTIALS:
        return (
            f"the portal refused the credentials ({code}): check B24_WEBHOOK_URL's user id "
            "and code, or the OAuth application and its refresh token"
        )
    if code == "INVALID_REQUEST":
        return "the portal requires https (INVALID_REQUEST): use an https:// URL"
    if code == "ACCESS_DENIED" and status == 403:
        return "REST is refused on this portal's plan (ACCESS_DENIED, HTTP 403)"
    if code == "ACCESS_DENIED":
        return "the user behind the credentials may not read deals (ACCESS_DENIED)"
    if code == "allowed_only_intranet_user":
        return "the credentials belong to an extranet user; CRM needs an intranet user"
    if code in ("OVERLOAD_LIMIT", "PORTAL_DELETED"):
        return f"the portal is blocked or gone ({code}): see the portal's administrator"
    if code in ("QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"):
        return f"reachable, but over its limits right now ({code}); try again shortly"
    return f"the portal answered {code or '(no code)'} (HTTP {status}): {exc.description}"
