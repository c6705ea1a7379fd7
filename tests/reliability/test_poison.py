"""Poison input: every bad message ends as one validation failure with a reason,
the worker's memory stays bounded while it refuses them, and a message that
crashes the worker is dead-lettered after a bounded number of deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from schemas import UpdateCommand, parse_command
from tests.env import clean_env
from tests.worker.broker import connected, drain, publish, take, unique_topology
from tests.worker.e2e import control, events, eventually, running_worker, settings_for, stored
from worker.amqp.topology import DELIVERY_LIMIT

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox, pytest.mark.reliability]

MB = 1024 * 1024
LIMIT = 1_048_576  # MAX_MESSAGE_BYTES, the default
SMUGGLED = "s3cr3t-token-in-a-message"


@dataclass(frozen=True)
class Poison:
    name: str
    body: bytes
    says: tuple[str, ...]  # what the reason must name: the field, or the problem
    properties: dict[str, Any] = field(default_factory=dict)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _deal(**fields: Any) -> bytes:
    return _json({"entityTypeId": 2, "id": 1, "fields": fields})


def _command(**top: Any) -> bytes:
    return _json({"entityTypeId": 2, "id": 1, "fields": {"title": "x"}, **top})


def corpus() -> list[Poison]:
    deep_object = b'{"a":' * 5000 + b"1" + b"}" * 5000
    deep_list = b"[" * 300 + b"]" * 300
    return [
        Poison("not-json", b"not json {", ("not valid JSON",)),
        Poison("empty-body", b"", ("not valid JSON", "EOF")),
        Poison("truncated-json", _deal(title="x")[:-3], ("not valid JSON",)),
        Poison(
            "text-plain",
            _deal(title="x"),
            ("content type 'text/plain'",),
            {"content_type": "text/plain"},
        ),
        Poison(
            "octet-stream",
            _deal(title="x"),
            ("content type 'application/octet-stream'",),
            {"content_type": "application/octet-stream"},
        ),
        Poison(
            "gzip-body",
            gzip.compress(_deal(title="x")),
            ("not valid JSON",),
            {"content_encoding": "gzip"},
        ),
        Poison("ten-mb-text", b"x" * (10 * MB), ("10485760 bytes", "MAX_MESSAGE_BYTES")),
        Poison(
            "ten-mb-json",
            _deal(title="x" * (10 * MB)),
            ("the body is 10485", "MAX_MESSAGE_BYTES"),
        ),
        Poison(
            "just-over-the-limit",
            _deal(comments="y" * LIMIT),
            ("the body is 10486", "MAX_MESSAGE_BYTES"),
        ),
        Poison(
            "deep-object",
            b'{"entityTypeId":2,"id":1,"fields":{"title":' + deep_object + b"}}",
            ("not valid JSON", "recursion limit"),
        ),
        Poison(
            "deep-list-in-custom-field",
            b'{"entityTypeId":2,"id":1,"fields":{"ufCrm_1721244707201":' + deep_list + b"}}",
            ("not valid JSON", "recursion limit"),
        ),
        Poison("deep-top-level-list", b"[" * 100_000 + b"]" * 100_000, ("recursion limit",)),
        Poison(
            "huge-integer-id",
            b'{"entityTypeId":2,"id":' + b"9" * 5000 + b',"fields":{}}',
            ("not valid JSON", "number out of range"),
        ),
        Poison(
            "huge-entity-type",
            _json({"entityTypeId": 10**40, "id": 1, "fields": {}}),
            ("entityTypeId: expected",),
        ),
        Poison(
            "id-over-int32",
            _json({"entityTypeId": 2, "id": 2**31, "fields": {}}),
            ("id: ", "2147483647"),
        ),
        Poison("nan", b'{"entityTypeId":2,"id":1,"fields":{"opportunity":NaN}}', ("opportunity",)),
        Poison(
            "infinity",
            b'{"entityTypeId":2,"id":1,"fields":{"opportunity":-Infinity}}',
            ("fields.opportunity: expected a finite number",),
        ),
        Poison("infinity-text", _deal(opportunity="Infinity"), ("fields.opportunity",)),
        Poison("id-zero", _json({"entityTypeId": 2, "id": 0, "fields": {}}), ("id: ", "given 0")),
        Poison(
            "id-negative", _json({"entityTypeId": 2, "id": -5, "fields": {}}), ("id: ", "given -5")
        ),
        Poison("id-fraction", _json({"entityTypeId": 2, "id": 1.5, "fields": {}}), ("id: ", "1.5")),
        Poison(
            "id-boolean", _json({"entityTypeId": 2, "id": True, "fields": {}}), ("id: ", "true")
        ),
        Poison(
            "unknown-entity-type",
            _json({"entityTypeId": 5, "id": 1, "fields": {}}),
            ("entityTypeId: expected", "given 5"),
        ),
        Poison(
            "odd-smart-process",
            _json({"entityTypeId": 1031, "id": 1, "fields": {}}),
            ("entityTypeId: expected", "given 1031"),
        ),
        Poison("no-entity-type", _json({"id": 1, "fields": {}}), ("entityTypeId: is required",)),
        Poison("no-fields", _json({"entityTypeId": 2, "id": 1}), ("fields: is required",)),
        Poison("boolean-one", _deal(opened=1), ("fields.opened: expected",)),
        Poison("boolean-one-text", _deal(opened="1"), ("fields.opened: expected",)),
        Poison("date-that-does-not-exist", _deal(closedate="2024-02-30"), ("fields.closedate",)),
        Poison("date-in-words", _deal(begindate="tomorrow"), ("fields.begindate",)),
        Poison("scalar-observers", _deal(observers=5), ("fields.observers", "array")),
        Poison("scalar-contact-ids", _deal(contactIds="3"), ("fields.contactIds", "array")),
        Poison(
            "bad-base64-photo",
            _json({"entityTypeId": 3, "id": 1, "fields": {"photo": ["a.png", "!!not base64!!"]}}),
            ("fields.photo", "base64"),
        ),
        Poison(
            "original-uf-name-in-mode-n",
            _deal(UF_CRM_1721244707107=1),
            ("fields.UF_CRM_1721244707107", "useOriginalUfNames is N"),
        ),
        Poison(
            "camel-uf-name-in-mode-y",
            _json(
                {
                    "entityTypeId": 2,
                    "id": 1,
                    "fields": {"ufCrm_1721244707107": 1},
                    "useOriginalUfNames": "Y",
                }
            ),
            ("fields.ufCrm_1721244707107", "useOriginalUfNames is Y"),
        ),
        Poison("misspelt-uf-name", _deal(ufcrm_1721244707107=1), ("fields.ufcrm_1721244707107",)),
        Poison("auth-in-body", _command(auth=SMUGGLED), ("auth: unexpected key",)),
        Poison(
            "portal-url-in-body",
            _command(domain="https://evil.example.com"),
            ("domain: unexpected key",),
        ),
        Poison(
            "webhook-in-body",
            _command(webhook=f"https://evil.example.com/rest/1/{SMUGGLED}/"),
            ("webhook: unexpected key",),
        ),
        Poison("extra-top-level-key", _command(halt=1), ("halt: unexpected key",)),
        Poison("json-array", _json([{"entityTypeId": 2, "id": 1, "fields": {}}]), ("JSON object",)),
        Poison("json-string", b'"crm.item.update"', ("JSON object",)),
        Poison("json-null", b"null", ("JSON object",)),
        Poison(
            "invalid-utf8",
            b'{"entityTypeId":2,"id":1,"fields":{"title":"\xff\xfe"}}',
            ("not valid JSON", "unicode"),
        ),
        Poison("utf8-bom", b"\xef\xbb\xbf" + _deal(title="x"), ("not valid JSON",)),
        # The last duplicate wins, as it does for the portal's own JSON decoder:
        # a valid first value cannot carry an invalid last one past validation.
        Poison(
            "duplicate-key",
            b'{"entityTypeId":2,"id":1,"fields":{"opened":"Y","opened":1}}',
            ("fields.opened: expected",),
        ),
        Poison(
            "fields-a-list",
            _json({"entityTypeId": 2, "id": 1, "fields": [1]}),
            ("fields: input should be an object",),
        ),
        Poison(
            "fields-a-string",
            _json({"entityTypeId": 2, "id": 1, "fields": "title=x"}),
            ("fields: input should be an object",),
        ),
        Poison("bad-mode", _command(useOriginalUfNames="maybe"), ("useOriginalUfNames",)),
        Poison("id-field-as-text", _deal(assignedById="boss"), ("fields.assignedById",)),
        Poison(
            "unknown-fm-type",
            _json(
                {
                    "entityTypeId": 3,
                    "id": 1,
                    "fields": {"fm": {"n0": {"typeId": "FAX", "valueType": "WORK", "value": "1"}}},
                }
            ),
            ("fields.fm.n0.typeId",),
        ),
    ]


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as running:
        yield running


async def publish_corpus(broker: Any, queue: str, cases: list[Poison], round_: int = 0) -> None:
    for case in cases:
        properties = {"message_id": f"{case.name}#{round_}", **case.properties}
        await publish(broker, queue, case.body, **properties)


async def test_every_poison_message_ends_as_one_validation_failure_naming_its_problem(
    amqp_url: str, portal: RunningSandbox
) -> None:
    cases = corpus()
    settings = settings_for(amqp_url, portal)
    async with connected(amqp_url, settings.topology()) as broker:
        async with running_worker(settings):
            await publish_corpus(broker, settings.UPDATE_QUEUE, cases)
            dead = events(await take(broker, settings.DEAD_LETTER_QUEUE, len(cases), timeout_s=60))
        # The worker has stopped: nothing else can follow.
        assert await drain(broker, settings.DEAD_LETTER_QUEUE) == []
        assert await drain(broker, settings.RESULT_QUEUE) == []
    by_id = {event["messageId"]: event for event in dead}
    assert sorted(by_id) == sorted(f"{case.name}#0" for case in cases)
    for case in cases:
        event = by_id[f"{case.name}#0"]
        error = event["error"]
        reason = error["description"]
        print(f"{case.name:28} {reason[:110]}")
        assert (event["status"], error["class"], error["code"]) == (
            "failed",
            "validation",
            "VALIDATION",
        ), case.name
        assert error["retryable"] is False
        assert "\n" not in reason, case.name
        assert len(reason) < 1000, case.name
        for needle in case.says:
            assert needle in reason, (case.name, reason)
        assert SMUGGLED not in reason
        assert len(json.dumps(event)) < 12 * MB
    counted = control(portal, "GET", "counters")["calls"]
    assert counted.get("crm.item.update", 0) == 0
    assert counted.get("batch", 0) == 0


def _memory_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    found = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


async def test_refusing_the_corpus_again_and_again_keeps_the_worker_s_memory_bounded(
    amqp_url: str, portal: RunningSandbox, tmp_path: Path
) -> None:
    """`b24-worker run` as a process: after a warm-up of two rounds of the corpus (each
    with two 10 MB bodies), four more rounds leave its resident memory where it was."""
    topology = unique_topology()
    env = {
        **clean_env(),
        "AMQP_URL": amqp_url,
        "B24_WEBHOOK_URL": portal.webhook_url,
        "UPDATE_QUEUE": topology.update_queue,
        "RESULT_QUEUE": topology.result_queue,
        "DEAD_LETTER_QUEUE": topology.dead_letter_queue,
        "RETRY_DELAYS_S": "1,2",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    log_file = tmp_path / "worker.log"
    cases = corpus()
    figures: list[dict[str, int]] = []
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", "run", stdout=log, stderr=log, env=env
        )
        try:
            async with connected(amqp_url, topology) as broker:
                await eventually(lambda: b'"worker.started"' in log_file.read_bytes(), 30)
                figures.append(_memory_kb(process.pid))
                for round_ in range(6):
                    await publish_corpus(broker, topology.update_queue, cases, round_)
                    dead = await take(broker, topology.dead_letter_queue, len(cases), timeout_s=60)
                    assert len(dead) == len(cases)
                    del dead
                    figures.append(_memory_kb(process.pid))
                assert await drain(broker, topology.result_queue) == []
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
    rss_mb = [f["VmRSS"] / 1024 for f in figures]
    peak_mb = figures[-1]["VmHWM"] / 1024
    print(
        f"RSS (MB) at start and after each round: {[round(x, 1) for x in rss_mb]}; "
        f"peak {peak_mb:.1f}"
    )
    assert process.returncode == 0, log_file.read_text()[-2000:]
    # A round moves RSS by a few 10 MB copies either way; it must not climb round on round.
    assert max(rss_mb[3:]) < max(rss_mb[1:3]) + 64, rss_mb
    assert peak_mb < rss_mb[0] + 250, (peak_mb, rss_mb)  # a round costs tens of MB, not more


def _crash_on(marker: bytes, calls: list[str]) -> Callable[..., UpdateCommand]:
    def parse(body: bytes | str | dict[str, Any]) -> UpdateCommand:
        if isinstance(body, bytes) and marker in body:
            calls.append("crash")
            raise RuntimeError("a bug met this message")
        return parse_command(body)

    return parse


async def test_a_message_that_crashes_the_worker_each_time_is_dead_lettered_after_the_limit(
    amqp_url: str, portal: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation itself raises (a bug) for one message: the worker hands it back
    each time, the broker dead-letters it after its delivery limit, and the worker
    reports it as DELIVERY_LIMIT; the other messages, before and after, are applied."""
    crashes: list[str] = []
    monkeypatch.setattr("worker.flow.jobs.parse_command", _crash_on(b"crash-me", crashes))
    settings = settings_for(amqp_url, portal)
    loop = asyncio.get_running_loop()
    topology = settings.topology()
    async with connected(amqp_url, topology) as broker:
        async with running_worker(settings):
            started = loop.time()
            for item_id in (1, 2):
                await publish(broker, settings.UPDATE_QUEUE, _json_deal(item_id, "before"))
            await publish(
                broker,
                settings.UPDATE_QUEUE,
                _json_deal(3, "crash-me"),
                message_id="crasher",
                correlation_id="c-crash",
            )
            for item_id in (4, 5):
                await publish(broker, settings.UPDATE_QUEUE, _json_deal(item_id, "after"))
            [event] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1, timeout_s=50))
            took = loop.time() - started
            applied = events(await take(broker, settings.RESULT_QUEUE, 4))
        # The worker has stopped: the message did not come back anywhere.
        assert await drain(broker, settings.DEAD_LETTER_QUEUE) == []
        assert await drain(broker, topology.poison_queue) == []
        assert await drain(broker, settings.UPDATE_QUEUE) == []
    on_update = len(crashes) - 1  # the last one was the worker reading the poison copy
    print(f"the crasher was delivered {on_update} times, then dead-lettered; {took:.1f} s")
    assert (event["messageId"], event["correlationId"]) == ("crasher", "c-crash")
    assert (event["error"]["class"], event["error"]["code"]) == ("unknown", "DELIVERY_LIMIT")
    assert "whether the portal applied it is not known" in event["error"]["description"]
    assert DELIVERY_LIMIT <= on_update <= DELIVERY_LIMIT + 1
    assert sorted(e["id"] for e in applied) == [1, 2, 4, 5]
    assert stored(portal, 2, 3)["title"] != "crash-me"


def _json_deal(item_id: int, title: str) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": {"title": title}}


def test_readme_counts_the_kinds_of_bad_message_this_corpus_holds() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [said] = re.findall(r"\*\*Bad input never loops\.\*\* (\d+) kinds of bad message", readme)
    cases = corpus()
    assert len({case.name for case in cases}) == len(cases)
    assert int(said) == len(cases)
