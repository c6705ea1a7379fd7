"""The portal misbehaves: every command still ends once, and correctly classified.

Each scenario runs the worker in-process against the real broker and a real
sandbox portal over HTTP, with a seeded fault, and checks that:

- every command has exactly one terminal event: a success on RESULT_QUEUE or
  a failure of the right class on DEAD_LETTER_QUEUE;
- no event reports more attempts than MAX_ATTEMPTS;
- nothing is dead-lettered because of a portal-wide state (limits, a block,
  an expired token);
- what the portal stored agrees: fm entries are counted on the items, and an
  addition is never applied twice.

The worker runs without reading back (B24_READ_BACK_AFTER_S=0), so a lost
answer to an addition ends `in_doubt` as it did before reading back existed;
the last scenario runs both ways (tests/worker/test_read_back.py has more).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from itertools import chain, zip_longest
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from sandbox.clock import ManualClock
from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected, publish_all
from tests.worker.e2e import control, eventually, running_worker
from tests.worker.e2e import settings_for as e2e_settings_for
from worker.runtime.app import Worker
from worker.settings import Settings

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.reliability]

Command = tuple[str, dict[str, Any]]  # (message id, body)

# Codes of portal-wide states and rate limits: never a message's outcome.
PORTAL_WIDE = {
    "QUERY_LIMIT_EXCEEDED",
    "OPERATION_TIME_LIMIT",
    "OVERLOAD_LIMIT",
    "NO_AUTH_FOUND",
    "expired_token",
    "TOKEN_RENEWAL_FAILED",
}
CONTACT, DEAL = 3, 2
# The worker paces itself; where the sandbox's limits are off, let it go fast.
UNPACED = {"B24_RATE_BURST": 500, "B24_RATE_PER_SECOND": 500}


# Commands ------------------------------------------------------------------------------------


def titles(item_ids: Iterable[int], tag: str) -> list[Command]:
    """Idempotent commands: a new title for each deal."""
    return [
        (f"{tag}-deal-{i}", {"entityTypeId": DEAL, "id": i, "fields": {"title": f"{tag} {i}"}})
        for i in item_ids
    ]


def phone_number(tag: str, item_id: int) -> str:
    return f"+1-{tag}-{item_id}"


def phone_additions(
    item_ids: Iterable[int], tag: str, *, as_list: bool = False, entity_type_id: int = CONTACT
) -> list[Command]:
    """Commands that are not idempotent: each adds a phone to an item (`n0`, or a list entry
    without an id)."""
    commands = []
    for i in item_ids:
        entry = {"typeId": "PHONE", "valueType": "WORK", "value": phone_number(tag, i)}
        fm: Any = [entry] if as_list else {"n0": entry}
        body = {"entityTypeId": entity_type_id, "id": i, "fields": {"fm": fm}}
        commands.append((f"{tag}-fm-{entity_type_id}-{i}", body))
    return commands


def photo_uploads(item_ids: Iterable[int], tag: str) -> list[Command]:
    """Commands that are not idempotent: each uploads a contact's photo."""
    return [
        (
            f"{tag}-photo-{i}",
            {"entityTypeId": CONTACT, "id": i, "fields": {"photo": [f"{tag}-{i}.png", "iVBORw0K"]}},
        )
        for i in item_ids
    ]


def interleave(*groups: list[Command]) -> list[Command]:
    """One of each in turn, so calls carry both kinds."""
    return [c for c in chain.from_iterable(zip_longest(*groups)) if c is not None]


# Outcomes ------------------------------------------------------------------------------------


class Ends:
    """Every event on RESULT_QUEUE and DEAD_LETTER_QUEUE, by message id, as it arrives."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)

    async def add(self, message: AbstractIncomingMessage) -> None:
        event = json.loads(message.body)
        self.by_id[event["messageId"]].append(event)

    def count(self, status: str | None = None) -> int:
        return sum(
            1
            for events in self.by_id.values()
            for event in events
            if status is None or event["status"] == status
        )

    async def all_of(
        self, commands: list[Command], worker: Worker, *, timeout_s: float = 60.0
    ) -> dict[str, dict[str, Any]]:
        """The one event of each command; fails on a missing, a second or a stray event.

        Once every command has an event, the worker is waited on until it holds
        nothing, has no call out and no ack to send: it can publish nothing more.
        The events it published (its own counters) must then be one per command.
        """
        wanted = {message_id for message_id, _ in commands}
        await eventually(lambda: wanted <= self.by_id.keys(), timeout_s)
        await eventually(lambda: idle(worker), timeout_s)
        assert published(worker) == len(wanted)
        assert self.by_id.keys() == wanted
        twice = {m: len(e) for m, e in self.by_id.items() if len(e) != 1}
        assert not twice, f"commands with more than one event: {twice}"
        return {message_id: events[0] for message_id, events in self.by_id.items()}


@asynccontextmanager
async def collecting(broker: AbstractRobustConnection, settings: Settings) -> AsyncIterator[Ends]:
    ends = Ends()
    channel = await broker.channel()
    for name in (settings.RESULT_QUEUE, settings.DEAD_LETTER_QUEUE):
        queue = await channel.get_queue(name)
        await queue.consume(ends.add, no_ack=True)
    try:
        yield ends
    finally:
        await channel.close()


def check_bounded(ends: dict[str, dict[str, Any]], max_attempts: int) -> None:
    """Attempts within bounds, and no failure caused by a portal-wide state."""
    for message_id, event in ends.items():
        assert 1 <= event["attempts"] <= max_attempts, (message_id, event["attempts"])
        if event["status"] == "failed":
            assert event["error"]["code"] not in PORTAL_WIDE, (message_id, event["error"])
            assert event["error"]["class"] in ("transient", "in_doubt"), (message_id, event)


def classes(ends: dict[str, dict[str, Any]], prefix: str = "") -> dict[str, int]:
    """How many of the commands whose id has `prefix` ended in each way."""
    counted: dict[str, int] = defaultdict(int)
    for message_id, event in ends.items():
        if prefix in message_id:
            kind = "succeeded" if event["status"] == "succeeded" else event["error"]["class"]
            counted[kind] += 1
    return dict(counted)


def stored_items(portal: RunningSandbox, entity_type_id: int) -> dict[int, dict[str, Any]]:
    """Every item of a type as the portal stored it (one control request)."""
    return {item["id"]: item for item in control(portal, "GET", f"items/{entity_type_id}")}


def phones_added(portal: RunningSandbox, adds: list[Command], tag: str) -> dict[str, int]:
    """For each addition, how many PHONE entries of its item hold its number."""
    types = {body["entityTypeId"] for _, body in adds}
    items = {(t, i): item for t in types for i, item in stored_items(portal, t).items()}
    return {
        message_id: sum(
            1
            for entry in items[body["entityTypeId"], body["id"]]["fm"]
            if entry["typeId"] == "PHONE" and entry["value"] == phone_number(tag, body["id"])
        )
        for message_id, body in adds
    }


def check_titles(
    portal: RunningSandbox, deals: list[Command], done: dict[str, dict[str, Any]]
) -> None:
    """Each succeeded title update reported and stored its title."""
    items = stored_items(portal, DEAL)
    for message_id, body in deals:
        if done[message_id]["status"] == "succeeded":
            assert done[message_id]["item"]["title"] == body["fields"]["title"]
            assert items[body["id"]]["title"] == body["fields"]["title"]


def metric(worker: Worker, name: str, **labels: str) -> float:
    return worker.metrics.total(name, **labels)


def idle(worker: Worker) -> bool:
    """Nothing held, no call out, no ack left to send: the worker publishes nothing more."""
    pipelines = [lane.pipeline for lane in worker.lanes.values()]
    busy = any(p.held or p.calls_out for p in pipelines)
    return not busy and worker.acks.pending == 0


def published(worker: Worker) -> int:
    """The success and failure events the worker published, as its own counters say."""
    return int(metric(worker, "b24_succeeded_total") + metric(worker, "b24_failed_total"))


def settings_for(amqp_url: str, portal: RunningSandbox, **overrides: Any) -> Settings:
    """As the end-to-end tests', without reading back unless ``overrides`` ask for it."""
    return e2e_settings_for(amqp_url, portal, **{"B24_READ_BACK_AFTER_S": 0, **overrides})


def portal_with(**options: Any) -> SandboxConfig:
    values: dict[str, Any] = {"seed_items": 150, "limits_enabled": False, "random_seed": 20240601}
    values.update(options)
    return SandboxConfig(**values)


async def run_to_the_end(
    amqp_url: str, portal: RunningSandbox, commands: list[Command], **overrides: Any
) -> tuple[Settings, dict[str, dict[str, Any]]]:
    """A worker applies the commands; the first terminal event of each, by message id."""
    settings = settings_for(amqp_url, portal, **overrides)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
        collecting(broker, settings) as ends,
    ):
        await publish_all(broker, settings.UPDATE_QUEUE, commands)
        return settings, await ends.all_of(commands, worker)


# 1. Random 500s ------------------------------------------------------------------------------


async def test_random_500s_retry_titles_and_leave_additions_in_doubt_never_added_twice(
    amqp_url: str,
) -> None:
    deals = titles(range(1, 131), "r500")
    adds = phone_additions(range(1, 21), "r500")
    commands = interleave(deals, adds)
    async with running_sandbox(portal_with(error_rate=0.15)) as portal:
        settings, done = await run_to_the_end(
            amqp_url, portal, commands, BATCH_SIZE=10, MAX_ATTEMPTS=6, **UNPACED
        )
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        # 0.15^6 per command: every title succeeds, and one that did not would be
        # `transient`. A 500 may follow a partly applied update, so an addition that
        # meets one is not sent again: it ends `in_doubt`.
        assert classes(done, "r500-deal") == {"succeeded": len(deals)}
        added = classes(done, "r500-fm")
        assert set(added) <= {"succeeded", "in_doubt"}
        assert sum(added.values()) == len(adds)
        assert counters["statuses"].get("500", 0) > 0
        assert any(e["attempts"] > 1 for e in done.values())
        check_titles(portal, deals, done)
        counts = phones_added(portal, adds, "r500")
        for message_id, _ in adds:
            if done[message_id]["status"] == "succeeded":
                assert counts[message_id] == 1
                assert done[message_id]["attempts"] == 1
            else:
                assert counts[message_id] <= 1


# 2. Answers slower than the client's timeout -------------------------------------------------


async def test_timeouts_retry_idempotent_commands_and_leave_additions_in_doubt_applied_once(
    amqp_url: str,
) -> None:
    """The portal carries each call out after the worker gave up waiting for it."""
    deals = titles(range(1, 61), "slow")
    adds = phone_additions(range(1, 16), "slow")
    uploads = photo_uploads(range(16, 21), "slow")
    commands = interleave(deals, adds, uploads)
    async with running_sandbox(portal_with(latency_ms=1500)) as portal:
        settings = settings_for(
            amqp_url, portal, B24_TIMEOUT_S=0.5, BATCH_SIZE=10, MAX_ATTEMPTS=5, **UNPACED
        )
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
            collecting(broker, settings) as ends,
        ):
            await publish_all(broker, settings.UPDATE_QUEUE, commands)
            # Every command's first call has timed out: then the portal speeds up.
            doubtful = len(adds) + len(uploads)
            await eventually(
                lambda: (
                    metric(worker, "b24_failed_total", error_class="in_doubt") == doubtful
                    and metric(worker, "b24_retried_total") >= len(deals)
                ),
                30,
            )
            control(portal, "PATCH", "faults", {"latency_ms": 0})
            done = await ends.all_of(commands, worker)
        # The portal carries out a call 1.5 s after it came, whether or not the worker still
        # waits: every command can have ended while it still carries out the last timed-out
        # ones. What it did is read once it has no request in progress.
        await eventually(lambda: control(portal, "GET", "counters")["in_flight"] == 0, 10)
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        assert classes(done, "-deal-") == {"succeeded": len(deals)}
        assert all(done[m]["attempts"] >= 2 for m, _ in deals)  # each timed out at least once
        check_titles(portal, deals, done)
        assert classes(done, "-fm-") == {"in_doubt": len(adds)}
        assert classes(done, "-photo-") == {"in_doubt": len(uploads)}
        for message_id, _ in adds + uploads:
            assert done[message_id]["attempts"] == 1  # never sent again
            assert "not idempotent" in done[message_id]["error"]["description"]
        # The timed-out calls did take effect, each exactly once: one phone per addition, one
        # photo per upload, and one save per command (a title sent again changes nothing).
        assert set(phones_added(portal, adds, "slow").values()) == {1}
        contacts = stored_items(portal, CONTACT)
        assert all(contacts[body["id"]]["photo"] for _, body in uploads)
        assert counters["saves"] == len(commands)
        assert counters["unchanged_updates"] >= len(deals)


# 3. Connections dropped after the request was carried out ------------------------------------


async def test_dropped_answers_retry_idempotent_commands_and_never_add_an_entry_twice(
    amqp_url: str,
) -> None:
    deals = titles(range(1, 101), "drop")
    adds = phone_additions(range(1, 31), "drop")
    commands = interleave(deals, adds)
    async with running_sandbox(portal_with(random_seed=7)) as portal:
        control(portal, "PATCH", "faults", {"disconnect_rate": 0.2})
        settings, done = await run_to_the_end(
            amqp_url, portal, commands, BATCH_SIZE=5, MAX_ATTEMPTS=8, **UNPACED
        )
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        assert counters["disconnects"] > 0
        assert classes(done, "-deal-") == {"succeeded": len(deals)}
        assert any(done[m]["attempts"] > 1 for m, _ in deals)
        check_titles(portal, deals, done)
        # An addition whose answer was lost is in doubt and not sent again; the portal had
        # applied it, so every contact holds its new phone exactly once.
        fm = classes(done, "-fm-")
        assert fm.get("in_doubt", 0) > 0
        assert fm.get("in_doubt", 0) + fm.get("succeeded", 0) == len(adds)
        assert all(done[m]["attempts"] == 1 for m, _ in adds)
        assert set(phones_added(portal, adds, "drop").values()) == {1}


# 4. HTML instead of JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 200])
async def test_html_answers_are_transient_and_additions_in_doubt_are_not_repeated(
    amqp_url: str, status: int
) -> None:
    deals = titles(range(1, 81), "html")
    adds = phone_additions(range(1, 31), "html", as_list=True)
    commands = interleave(deals, adds)
    async with running_sandbox(portal_with(random_seed=11)) as portal:
        control(portal, "PATCH", "faults", {"html_rate": 0.2, "html_status": status})
        settings, done = await run_to_the_end(
            amqp_url, portal, commands, BATCH_SIZE=5, MAX_ATTEMPTS=8, **UNPACED
        )
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        assert counters["html_answers"] > 0
        assert classes(done, "-deal-") == {"succeeded": len(deals)}
        assert any(done[m]["attempts"] > 1 for m, _ in deals)
        check_titles(portal, deals, done)
        # Whether a page stands for an applied call cannot be known: an addition that met
        # one is in doubt and not sent again. (This portal never saw those calls.)
        fm = classes(done, "-fm-")
        assert fm.get("in_doubt", 0) > 0
        assert fm.get("in_doubt", 0) + fm.get("succeeded", 0) == len(adds)
        phones = phones_added(portal, adds, "html")
        for message_id, _ in adds:
            applied = 1 if done[message_id]["status"] == "succeeded" else 0
            assert phones[message_id] == applied, message_id


# 5. 503 QUERY_LIMIT_EXCEEDED storms ----------------------------------------------------------


async def test_a_query_limit_storm_is_waited_out_without_using_attempts(amqp_url: str) -> None:
    """The portal's bucket is a fifth of what the worker was told: most of the first burst
    gets 503 QUERY_LIMIT_EXCEEDED."""
    deals = titles(range(1, 101), "storm")
    adds = phone_additions(range(1, 21), "storm")
    commands = interleave(deals, adds)
    config = portal_with(limits_enabled=True, rate_burst=10, rate_per_second=10.0)
    async with running_sandbox(config) as portal:
        settings = settings_for(
            amqp_url, portal, BATCH_SIZE=2, B24_RATE_BURST=50, B24_RATE_PER_SECOND=20
        )
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
            collecting(broker, settings) as ends,
        ):
            await publish_all(broker, settings.UPDATE_QUEUE, commands)
            done = await ends.all_of(commands, worker)
            limited = metric(worker, "b24_rate_limited_total", code="QUERY_LIMIT_EXCEEDED")
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        assert counters["query_limit_rejections"] >= 10
        assert limited == counters["query_limit_rejections"]  # each 503 seen by the worker
        assert classes(done) == {"succeeded": len(commands)}
        assert all(event["attempts"] == 1 for event in done.values())  # no attempt used
        check_titles(portal, deals, done)
        # A 503 answers a request that did not run: the additions went again, and once.
        assert set(phones_added(portal, adds, "storm").values()) == {1}
        assert counters["saves"] == len(commands)


# 6. OPERATION_TIME_LIMIT in the middle of a batch --------------------------------------------


async def test_commands_limited_inside_a_batch_are_sent_again_later_without_using_attempts(
    amqp_url: str,
) -> None:
    """The portal's operating limit is far below the worker's setting: a batch runs until the
    method's window is used up, and its later commands get OPERATION_TIME_LIMIT."""
    deals = titles(range(1, 81), "busy")
    adds = phone_additions(range(1, 21), "busy")
    commands = interleave(deals, adds)
    config = portal_with(
        limits_enabled=True,
        rate_burst=1000,
        rate_per_second=1000.0,
        operating_limit_s=2.0,
        operating_window_s=2.0,
        operating_cost_s=0.1,
    )
    async with running_sandbox(config) as portal:
        settings = settings_for(
            amqp_url, portal, BATCH_SIZE=50, B24_OPERATING_WINDOW_S=2, **UNPACED
        )
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
            collecting(broker, settings) as ends,
        ):
            await publish_all(broker, settings.UPDATE_QUEUE, commands)
            done = await ends.all_of(commands, worker)
            limited = metric(worker, "b24_rate_limited_total", code="OPERATION_TIME_LIMIT")
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        rejected = counters["operation_limit_rejections"]
        assert rejected > 0
        assert limited > 0
        assert classes(done) == {"succeeded": len(commands)}
        assert all(event["attempts"] == 1 for event in done.values())  # no attempt used
        check_titles(portal, deals, done)
        # The rest of each batch was applied; each limited command was sent again and
        # applied once: one call per command plus one per refusal, one save per command.
        assert counters["calls"]["crm.item.update"] == len(commands) + rejected
        assert counters["saves"] == len(commands)
        assert set(phones_added(portal, adds, "busy").values()) == {1}


# 7. expired_token mid-run (OAuth) ------------------------------------------------------------


async def test_an_access_token_expiring_mid_run_is_refreshed_once_and_all_succeed(
    amqp_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    deals = titles(range(1, 121), "token")
    clock = ManualClock()  # the portal's time: the token expires when the test says so
    config = portal_with(access_token_ttl_s=600.0, latency_ms=30)
    async with running_sandbox(config, clock=clock) as portal:
        grants: list[str] = []
        grant = portal.state.tokens.grant

        def counted(params: dict[str, Any], endpoint: str) -> dict[str, Any]:
            grants.append(str(params.get("grant_type")))
            return grant(params, endpoint)

        monkeypatch.setattr(portal.state.tokens, "grant", counted)
        settings = settings_for(
            amqp_url,
            portal,
            B24_WEBHOOK_URL=None,
            B24_PORTAL_URL=portal.base_url,
            B24_CLIENT_ID=config.client_id,
            B24_CLIENT_SECRET=config.client_secret,
            B24_REFRESH_TOKEN=control(portal, "POST", "oauth/tokens")["refresh_token"],
            B24_OAUTH_TOKEN_URL=portal.token_url,
            B24_TOKEN_FILE=str(tmp_path / "token.json"),
            BATCH_SIZE=4,
            **UNPACED,
        )
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
            collecting(broker, settings) as ends,
        ):
            await publish_all(broker, settings.UPDATE_QUEUE, deals)
            await eventually(lambda: ends.count("succeeded") >= 30, 30)
            assert grants == ["refresh_token"]  # the first access token, at start
            clock.advance(601.0)
            done = await ends.all_of(deals, worker)
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        assert classes(done) == {"succeeded": len(deals)}
        assert all(event["attempts"] == 1 for event in done.values())  # expiry is no attempt
        check_titles(portal, deals, done)
        assert counters["errors"].get("expired_token", 0) >= 1
        assert grants == ["refresh_token", "refresh_token"]  # one refresh for the expiry


# 8. The portal blocked, then unblocked -------------------------------------------------------


async def test_while_the_portal_is_blocked_nothing_is_sent_or_ended_and_all_succeed_after(
    amqp_url: str,
) -> None:
    deals = titles(range(1, 151), "block")
    adds = phone_additions(range(1, 21), "block")
    commands = interleave(deals, adds)
    async with running_sandbox(portal_with()) as portal:
        # Paced to ten calls a second, so the block comes while most commands wait.
        settings = settings_for(
            amqp_url, portal, BATCH_SIZE=5, B24_RATE_BURST=2, B24_RATE_PER_SECOND=10
        )
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
            collecting(broker, settings) as ends,
        ):
            await publish_all(broker, settings.UPDATE_QUEUE, commands)
            await eventually(lambda: ends.count() >= 20, 30)
            control(portal, "PATCH", "faults", {"overload": True})
            await eventually(lambda: worker.pipeline.down == "blocked", 10)
            before = ends.count()
            assert before < len(commands)
            asked = control(portal, "GET", "counters")["requests"]
            # Held, not failed: nothing ends while the portal is blocked, and only the
            # probes reach it (after 1 s, then 2 s more; a call still on its way at
            # the block may arrive too).
            await asyncio.sleep(2.0)
            assert ends.count() == before
            assert 1 <= control(portal, "GET", "counters")["requests"] - asked <= 3
            assert ends.count("failed") == 0
            assert worker.not_ready() is None  # /readyz is about the worker, not its portal
            control(portal, "PATCH", "faults", {"overload": False})
            done = await ends.all_of(commands, worker)
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        assert counters["errors"].get("OVERLOAD_LIMIT", 0) > 0
        assert classes(done) == {"succeeded": len(commands)}
        assert all(event["attempts"] == 1 for event in done.values())
        check_titles(portal, deals, done)
        assert set(phones_added(portal, adds, "block").values()) == {1}


# 9. fm additions under every fault at once ---------------------------------------------------


@pytest.mark.parametrize("read_back_after_s", [0, 0.3], ids=["in-doubt", "read-back"])
async def test_fm_additions_are_never_applied_twice_whatever_the_fault(
    amqp_url: str, read_back_after_s: float
) -> None:
    """500s (the portal did not run the call), dropped answers (it did) and HTML pages (it
    did not) at once, on leads, contacts and companies, both spellings of an addition;
    the reads back meet the same faults."""
    lead, company = 1, 4
    adds = interleave(
        phone_additions(range(1, 31), "mixed", entity_type_id=lead),
        phone_additions(range(1, 31), "mixed", entity_type_id=CONTACT, as_list=True),
        phone_additions(range(1, 31), "mixed", entity_type_id=company),
    )
    deals = titles(range(1, 31), "mixed")
    commands = interleave(adds, deals)
    async with running_sandbox(portal_with(random_seed=5, error_rate=0.1)) as portal:
        control(portal, "PATCH", "faults", {"disconnect_rate": 0.1, "html_rate": 0.1})
        settings, done = await run_to_the_end(
            amqp_url,
            portal,
            commands,
            BATCH_SIZE=3,
            MAX_ATTEMPTS=8,
            B24_READ_BACK_AFTER_S=read_back_after_s,
            **UNPACED,
        )
        counters = control(portal, "GET", "counters")
        check_bounded(done, settings.MAX_ATTEMPTS)
        assert counters["statuses"].get("500", 0) > 0
        assert counters["disconnects"] > 0
        assert counters["html_answers"] > 0
        assert classes(done, "-deal-") == {"succeeded": len(deals)}
        check_titles(portal, deals, done)
        fm = classes(done, "-fm-")
        print(f"\nfm additions ({read_back_after_s=}): {dict(fm)}")
        if read_back_after_s:
            # Read back. Here the reads meet the same faults as the updates (a third
            # of them fails), so a command whose item could not be read before its
            # call (three tries) and whose answer is then lost stays in doubt: 0 of
            # 90 in the runs seen, 5% allowed. test_read_back.py holds reads that
            # answer to at most 1%.
            assert set(fm) <= {"succeeded", "in_doubt"}
            assert fm.get("in_doubt", 0) * 20 <= len(adds)
        else:
            assert set(fm) == {"succeeded", "in_doubt"}
        assert sum(fm.values()) == len(adds)
        phones = phones_added(portal, adds, "mixed")
        for message_id, _ in adds:
            event = done[message_id]
            if event["status"] == "succeeded":
                assert phones[message_id] == 1, message_id  # retried after 500s: added once
            else:
                assert phones[message_id] <= 1, message_id  # applied at most once, not resent
