"""Field definitions from crm.item.fields: loading, sharing, refreshing, and checking fields.

Most tests ask the sandbox portal over real HTTP (its default custom fields are
on every entity type); a few use a scripted caller for answers the sandbox
cannot give (a field created between two loads, a malformed answer).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
from redis.asyncio import Redis

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, serve_in_thread
from schemas import CommandValidationError, FieldDefinition
from worker.bitrix import (
    BitrixClient,
    CommandAnswer,
    NoAnswerError,
    PortalError,
    WebhookAuth,
    make_http_client,
)
from worker.flow.definitions import METHOD, FieldDefinitions
from worker.flow.redis_definitions import RedisDefinitionsCache
from worker.limiter.clock import FakeClock

DEAL = 2
SPA = 1032
BUDGET = "ufCrm_1721244707107"  # double
NOTE = "ufCrm_1721244707201"  # string
TAGS = "ufCrm_1721244707202"  # string, multiple
APPROVED = "ufCrm_1721244707203"  # boolean
DUE = "ufCrm_1721244707204"  # date
LINKED = "ufCrm_1721244707208"  # integer, multiple
SPA_NOTE = "ufCrm1_1721244707201"  # a smart process spells its custom fields ufCrm{N}_...


@pytest.fixture(scope="module")
def portal() -> Iterator[RunningSandbox]:
    with serve_in_thread(SandboxConfig(seed_items=1, limits_enabled=False)) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Counting:
    """The sandbox client, counting the calls that left (the portal does not count refused ones)."""

    def __init__(self, client: BitrixClient) -> None:
        self.client = client
        self.calls = 0

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CommandAnswer:
        self.calls += 1
        return await self.client.call(method, params)


@pytest.fixture
def counting(client: BitrixClient) -> Counting:
    return Counting(client)


@pytest.fixture
async def definitions(counting: Counting, clock: FakeClock) -> AsyncIterator[FieldDefinitions]:
    cache = FieldDefinitions(client=counting, clock=clock, refresh_s=600.0, retry_s=30.0)
    yield cache
    await cache.close()


async def _fields_calls(portal: RunningSandbox) -> int:
    async with make_http_client(timeout_s=5.0) as http:
        response = await http.get(portal.control_url + "/counters")
        calls: dict[str, int] = response.json()["calls"]
        return calls.get(METHOD, 0)


async def _faults(portal: RunningSandbox, **faults: Any) -> None:
    async with make_http_client(timeout_s=5.0) as http:
        response = await http.patch(portal.control_url + "/faults", json=faults)
        assert response.status_code == 200


def _paths(error: CommandValidationError) -> list[str]:
    return [problem.path for problem in error.problems]


# --- against the sandbox -------------------------------------------------------------------


@pytest.mark.sandbox
async def test_get_loads_the_types_definitions_keyed_by_camel_case_name(
    definitions: FieldDefinitions,
) -> None:
    found = await definitions.get(DEAL)

    assert found is not None
    assert found[BUDGET].type == "double"
    assert found[BUDGET].upperName == "UF_CRM_1721244707107"
    assert found[TAGS].isMultiple
    assert found["createdBy"].isReadOnly
    assert found["title"].type == "string"


@pytest.mark.sandbox
async def test_a_custom_field_of_the_wrong_type_is_refused_with_the_field_named(
    definitions: FieldDefinitions,
) -> None:
    with pytest.raises(CommandValidationError) as caught:
        await definitions.check(
            DEAL,
            {"title": "ok", BUDGET: "a lot", TAGS: "one", APPROVED: "maybe"},
            original_uf_names=False,
        )

    assert sorted(_paths(caught.value)) == sorted(
        [f"fields.{BUDGET}", f"fields.{TAGS}", f"fields.{APPROVED}"]
    )
    assert BUDGET in caught.value.reason


@pytest.mark.sandbox
async def test_standard_fields_alone_cost_the_portal_no_request(
    portal: RunningSandbox, definitions: FieldDefinitions, counting: Counting
) -> None:
    # leadId is immutable on this portal: the success event's notApplied says so.
    fields = {"title": "ok", "leadId": 7, "opportunity": 10}

    checked = await definitions.check(DEAL, fields, original_uf_names=False)

    assert checked == fields
    assert counting.calls == 0
    assert await _fields_calls(portal) == 0
    await definitions.check(DEAL, {**fields, NOTE: "x"}, original_uf_names=False)
    assert counting.calls == 1


@pytest.mark.sandbox
@pytest.mark.parametrize(
    ("name", "original_uf_names"),
    [("ufCrm_9999999999", False), ("UF_CRM_9999999999", True), ("ufCrm1032Missing", False)],
)
async def test_an_unknown_custom_field_is_refused(
    definitions: FieldDefinitions, name: str, original_uf_names: bool
) -> None:
    with pytest.raises(CommandValidationError) as caught:
        await definitions.check(DEAL, {name: "x"}, original_uf_names=original_uf_names)

    assert _paths(caught.value) == [f"fields.{name}"]
    assert "no such custom field" in caught.value.reason


@pytest.mark.sandbox
async def test_valid_custom_values_pass_normalised_and_standard_fields_are_untouched(
    definitions: FieldDefinitions,
) -> None:
    fields = {
        "title": "Deal",
        "stageId": "C1:NEW",  # not this portal's stage: the command's schema judged it
        "opportunity": "100.50",
        "parentId1032": "5",
        BUDGET: "12.50",
        NOTE: "text",
        TAGS: ["a", "b"],
        APPROVED: True,
        DUE: "2024-05-01",
        LINKED: ["3", 4],
    }

    checked = await definitions.check(DEAL, fields, original_uf_names=False)

    assert checked == {**fields, APPROVED: "Y", LINKED: [3, 4]}
    assert list(checked) == list(fields)  # the order is kept


@pytest.mark.sandbox
async def test_original_uf_names_are_matched_by_upper_name(
    definitions: FieldDefinitions,
) -> None:
    checked = await definitions.check(
        SPA,
        {"title": "x", "UF_CRM_1_1721244707203": "true", "UF_CRM_1_1721244707208": []},
        original_uf_names=True,
    )
    assert checked == {"title": "x", "UF_CRM_1_1721244707203": "Y", "UF_CRM_1_1721244707208": []}

    with pytest.raises(CommandValidationError) as caught:
        await definitions.check(SPA, {"UF_CRM_1_1721244707107": [1]}, original_uf_names=True)
    assert _paths(caught.value) == ["fields.UF_CRM_1_1721244707107"]


@pytest.mark.sandbox
async def test_concurrent_callers_share_one_load_per_type(
    portal: RunningSandbox, definitions: FieldDefinitions
) -> None:
    await _faults(portal, latency_ms=100)

    found = await asyncio.gather(*(definitions.get(DEAL) for _ in range(10)))
    checked = await asyncio.gather(
        *(definitions.check(SPA, {SPA_NOTE: "x"}, original_uf_names=False) for _ in range(10))
    )

    assert all(f is found[0] for f in found)
    assert checked == [{SPA_NOTE: "x"}] * 10
    assert await _fields_calls(portal) == 2  # one per entity type
    await definitions.get(DEAL)
    assert await _fields_calls(portal) == 2


@pytest.mark.sandbox
async def test_definitions_are_reloaded_once_older_than_refresh_s(
    portal: RunningSandbox, definitions: FieldDefinitions, clock: FakeClock
) -> None:
    first = await definitions.get(DEAL)
    await clock.advance(599.0)
    assert await definitions.get(DEAL) is first
    assert await _fields_calls(portal) == 1

    await clock.advance(1.0)
    second = await definitions.get(DEAL)

    assert await _fields_calls(portal) == 2
    assert second is not first
    assert second == first


@pytest.mark.sandbox
async def test_a_portal_error_gives_none_and_check_passes_fields_unchanged(
    portal: RunningSandbox, definitions: FieldDefinitions, counting: Counting, clock: FakeClock
) -> None:
    await _faults(portal, overload=True)
    fields = {"title": "x", BUDGET: "not a number", "ufCrm_9999999999": 1, "createdBy": 3}

    assert await definitions.get(DEAL) is None
    assert await definitions.check(DEAL, fields, original_uf_names=False) == fields
    assert counting.calls == 1  # no second try within retry_s

    await _faults(portal, overload=False)
    await clock.advance(29.0)
    assert await definitions.get(DEAL) is None
    await clock.advance(1.0)
    assert await definitions.get(DEAL) is not None
    assert counting.calls == 2


@pytest.mark.sandbox
async def test_a_failed_refresh_keeps_serving_the_last_good_copy(
    portal: RunningSandbox, definitions: FieldDefinitions, counting: Counting, clock: FakeClock
) -> None:
    first = await definitions.get(DEAL)
    await _faults(portal, overload=True)
    await clock.advance(600.0)

    assert await definitions.get(DEAL) is first
    with pytest.raises(CommandValidationError):
        await definitions.check(DEAL, {BUDGET: "a lot"}, original_uf_names=False)
    assert counting.calls == 2


@pytest.mark.sandbox
async def test_an_unknown_entity_type_gives_none(definitions: FieldDefinitions) -> None:
    assert await definitions.get(999) is None
    assert await definitions.check(999, {BUDGET: "x"}, original_uf_names=False) == {BUDGET: "x"}


@pytest.mark.sandbox
async def test_no_answer_gives_none(portal: RunningSandbox, clock: FakeClock) -> None:
    await _faults(portal, latency_ms=500)
    try:
        async with make_http_client(timeout_s=0.1) as http:
            slow = BitrixClient(http=http, auth=WebhookAuth(portal.webhook_url))
            cache = FieldDefinitions(client=slow, clock=clock)
            assert await cache.get(DEAL) is None
    finally:
        await _faults(portal, latency_ms=0)


# --- with a scripted caller ------------------------------------------------------------------


def _answer(fields: Mapping[str, Mapping[str, Any]]) -> CommandAnswer:
    return CommandAnswer(result={"fields": dict(fields)})


_TITLE = {"type": "string", "upperName": "TITLE"}
_NEW = {"type": "integer", "isDynamic": True, "upperName": "UF_CRM_NEW"}


class Scripted:
    """Answers crm.item.fields from a list, one entry per call; an exception is raised."""

    def __init__(
        self, *answers: CommandAnswer | Exception, gate: asyncio.Event | None = None
    ) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.gate = gate

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> CommandAnswer:
        self.calls.append((method, dict(params or {})))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_the_call_asks_for_camel_case_names() -> None:
    caller = Scripted(_answer({"title": _TITLE}))
    cache = FieldDefinitions(client=caller, clock=FakeClock())

    assert await cache.get(DEAL) == {"title": FieldDefinition.model_validate(_TITLE)}
    assert caller.calls == [(METHOD, {"entityTypeId": DEAL, "useOriginalUfNames": "N"})]


async def test_read_only_and_immutable_custom_fields_are_refused() -> None:
    caller = Scripted(
        _answer(
            {
                "title": _TITLE,
                "ufCrmLocked": {"type": "string", "isReadOnly": True},
                "ufCrmOnce": {"type": "string", "isImmutable": True},
                "ufCrmFree": {"type": "string"},
            }
        )
    )
    cache = FieldDefinitions(client=caller, clock=FakeClock())

    with pytest.raises(CommandValidationError) as caught:
        await cache.check(
            DEAL,
            {"title": "t", "ufCrmLocked": "a", "ufCrmOnce": "b", "ufCrmFree": "c"},
            original_uf_names=False,
        )

    assert sorted(_paths(caught.value)) == ["fields.ufCrmLocked", "fields.ufCrmOnce"]
    assert all("read-only" in problem.message for problem in caught.value.problems)


async def test_an_unknown_custom_field_reloads_a_copy_older_than_unknown_reload_s() -> None:
    clock = FakeClock()
    caller = Scripted(
        _answer({"title": _TITLE}),
        _answer({"title": _TITLE, "ufCrmNew": _NEW}),
    )
    cache = FieldDefinitions(client=caller, clock=clock, unknown_reload_s=60.0)
    await cache.get(DEAL)

    await clock.advance(59.0)
    with pytest.raises(CommandValidationError):
        await cache.check(DEAL, {"ufCrmNew": "1"}, original_uf_names=False)
    assert len(caller.calls) == 1  # too fresh to ask again

    await clock.advance(1.0)
    checked = await cache.check(DEAL, {"UF_CRM_NEW": "7"}, original_uf_names=True)

    assert checked == {"UF_CRM_NEW": 7}
    assert len(caller.calls) == 2


@pytest.mark.parametrize(
    "answer",
    [
        CommandAnswer(result=[]),
        CommandAnswer(result={"fields": []}),
        _answer({"title": {"isReadOnly": True}}),  # no type
    ],
)
async def test_an_answer_of_another_shape_gives_none(answer: CommandAnswer) -> None:
    cache = FieldDefinitions(client=Scripted(answer), clock=FakeClock())

    assert await cache.get(DEAL) is None
    assert await cache.check(DEAL, {"ufCrmX": "1"}, original_uf_names=False) == {"ufCrmX": "1"}


@pytest.mark.parametrize(
    "error",
    [
        PortalError(method=METHOD, code="OVERLOAD_LIMIT", description="overload", status=503),
        NoAnswerError(
            method=METHOD, kind="ReadTimeout", where="https://x/rest/1/***/", maybe_sent=True
        ),
    ],
)
async def test_client_errors_give_none(error: Exception) -> None:
    cache = FieldDefinitions(client=Scripted(error), clock=FakeClock())

    assert await cache.get(DEAL) is None


async def test_a_cancelled_caller_leaves_the_shared_load_to_the_others() -> None:
    gate = asyncio.Event()
    caller = Scripted(_answer({"title": _TITLE}), gate=gate)
    cache = FieldDefinitions(client=caller, clock=FakeClock())
    first = asyncio.create_task(cache.get(DEAL))
    second = asyncio.create_task(cache.get(DEAL))
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    first.cancel()
    gate.set()

    assert await second is not None
    assert first.cancelled()
    assert len(caller.calls) == 1


async def test_close_stops_a_load_in_flight() -> None:
    caller = Scripted(_answer({"title": _TITLE}), gate=asyncio.Event())
    cache = FieldDefinitions(client=caller, clock=FakeClock())
    waiting = asyncio.create_task(cache.get(DEAL))
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    await cache.close()

    with pytest.raises(asyncio.CancelledError):
        await waiting


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="refresh_s"):
        FieldDefinitions(client=Scripted(), clock=FakeClock(), refresh_s=0)


# --- shared between replicas through Redis ---------------------------------------------------


@pytest.fixture
async def shared_cache(redis_url: str) -> AsyncIterator[RedisDefinitionsCache]:
    redis = Redis.from_url(redis_url)
    scope = f"test-{uuid.uuid4().hex}"
    yield RedisDefinitionsCache(redis, scope=scope)
    keys = [key async for key in redis.scan_iter(f"b24-worker:definitions:{scope}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.mark.sandbox
@pytest.mark.redis
async def test_replicas_sharing_a_cache_ask_the_portal_once(
    counting: Counting, clock: FakeClock, shared_cache: RedisDefinitionsCache
) -> None:
    replicas = [
        FieldDefinitions(client=counting, clock=clock, cache=shared_cache) for _ in range(3)
    ]
    try:
        found = [await replica.get(DEAL) for replica in replicas]
    finally:
        for replica in replicas:
            await replica.close()
    assert counting.calls == 1
    assert found[0] is not None
    assert BUDGET in found[0]
    assert found[1] == found[0] == found[2]


@pytest.mark.sandbox
@pytest.mark.redis
async def test_an_unknown_custom_field_skips_a_shared_copy_older_than_the_reload_age(
    counting: Counting, clock: FakeClock, shared_cache: RedisDefinitionsCache
) -> None:
    stale: dict[str, Any] = {"fields": {}}  # a copy from before any custom field existed
    await shared_cache.put(DEAL, stale, ttl_s=600)
    assert await shared_cache.get(DEAL, max_age_s=600) == stale
    assert await shared_cache.get(DEAL, max_age_s=0) is None

    replica = FieldDefinitions(
        client=counting, clock=clock, cache=shared_cache, unknown_reload_s=0.0
    )
    try:
        checked = await replica.check(DEAL, {BUDGET: 12.5}, original_uf_names=False)
    finally:
        await replica.close()
    assert checked == {BUDGET: 12.5}
    assert counting.calls == 1  # the stale copy was read, then the portal asked


async def test_a_cache_that_cannot_be_reached_is_no_cache(
    counting: Counting, clock: FakeClock
) -> None:
    unreachable = RedisDefinitionsCache(
        Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5), scope="x"
    )
    assert await unreachable.get(DEAL, max_age_s=600) is None
    await unreachable.put(DEAL, {"fields": {}}, ttl_s=600)  # no error
