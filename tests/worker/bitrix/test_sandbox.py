"""The client against the sandbox portal over real HTTP: calls, batches, limits, faults."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.clock import ManualClock
from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox, serve_in_thread
from worker.bitrix import (
    BitrixClient,
    CommandError,
    NoAnswerError,
    PortalError,
    WebhookAuth,
    make_http_client,
)

pytestmark = pytest.mark.sandbox

DEAL = 2


@pytest.fixture(scope="module")
def portal() -> Iterator[RunningSandbox]:
    with serve_in_thread(SandboxConfig(seed_items=60, limits_enabled=False)) as running:
        yield running


async def _stored(portal: RunningSandbox, type_id: int, item_id: int) -> dict[str, Any]:
    async with make_http_client(timeout_s=5.0) as http:
        response = await http.get(f"{portal.control_url}/items/{type_id}/{item_id}")
        body: dict[str, Any] = response.json()
        return body


async def _faults(portal: RunningSandbox, **faults: Any) -> None:
    async with make_http_client(timeout_s=5.0) as http:
        response = await http.patch(portal.control_url + "/faults", json=faults)
        assert response.status_code == 200


def _title(item: dict[str, Any]) -> Any:
    return item.get("title", item.get("TITLE"))


async def test_a_single_call_updates_the_item_and_reports_its_time(
    portal: RunningSandbox, client: BitrixClient
) -> None:
    answer = await client.call(
        "crm.item.update", {"entityTypeId": DEAL, "id": 3, "fields": {"title": "Renamed"}}
    )
    assert answer.ok
    assert answer.result["item"]["title"] == "Renamed"
    assert answer.time is not None
    assert answer.time.processing == 0.5
    assert answer.time.operating is not None
    got = await client.call("crm.item.get", {"entityTypeId": DEAL, "id": 3})
    assert got.result["item"]["title"] == "Renamed"


async def test_unknown_method_and_missing_item_are_raised_for_a_single_call(
    client: BitrixClient,
) -> None:
    with pytest.raises(PortalError) as caught:
        await client.call("crm.item.nosuch", {})
    assert (caught.value.code, caught.value.status) == ("ERROR_METHOD_NOT_FOUND", 404)
    with pytest.raises(PortalError) as caught:
        await client.call("crm.item.update", {"entityTypeId": DEAL, "id": 9999, "fields": {}})
    assert (caught.value.code, caught.value.status) == ("NOT_FOUND", 400)


async def test_a_batch_of_fifty_maps_each_result_and_error_back_by_name(
    portal: RunningSandbox, client: BitrixClient
) -> None:
    await _faults(
        portal,
        item_errors=[
            {"error": "CRM_FIELD_ERROR_VALUE_NOT_VALID", "entity_type_id": DEAL, "item_id": 7}
        ],
    )
    commands: dict[str, tuple[str, dict[str, Any]]] = {}
    for n in range(1, 51):
        item_id = n if n % 10 else 1000 + n  # every tenth item does not exist
        fields = {"title": f"Batch {n}"}
        commands[f"deal{n}"] = (
            "crm.item.update",
            {"entityTypeId": DEAL, "id": item_id, "fields": fields},
        )
    commands["deal20"] = (
        "crm.item.update",
        {"entityTypeId": 555, "id": 1, "fields": {"title": "x"}},
    )
    commands["deal21"] = (
        "crm.item.update",
        {"entityTypeId": DEAL, "id": 21, "fields": {"ufCrm_1721244707202": "scalar"}},
    )
    answer = await client.batch(commands)
    assert list(answer.commands) == list(commands)
    failed = {name: a.error for name, a in answer.commands.items() if a.error is not None}
    assert set(failed) == {"deal7", "deal10", "deal20", "deal21", "deal30", "deal40", "deal50"}
    assert failed["deal7"] is not None
    assert failed["deal7"].code == "CRM_FIELD_ERROR_VALUE_NOT_VALID"
    assert failed["deal10"] == CommandError(code="NOT_FOUND", description="Item was not found.")
    assert failed["deal20"] == CommandError(
        code="NOT_FOUND", description="Smart Process Automation was not found"
    )
    assert failed["deal21"] is not None
    assert failed["deal21"].code == "100"
    ok = answer.commands["deal12"]
    assert ok.result["item"]["title"] == "Batch 12"
    assert ok.time is not None
    assert ok.time.processing == 0.5
    assert _title(await _stored(portal, DEAL, 12)) == "Batch 12"
    assert _title(await _stored(portal, DEAL, 7)) != "Batch 7"


async def test_commands_past_the_fiftieth_get_batch_length_exceeded(
    portal: RunningSandbox, client: BitrixClient
) -> None:
    commands = {
        f"c{n}": (
            "crm.item.update",
            {"entityTypeId": DEAL, "id": 1 + n % 30, "fields": {"comments": f"n{n}"}},
        )
        for n in range(53)
    }
    answer = await client.batch(commands)
    assert all(answer.commands[f"c{n}"].ok for n in range(50))
    for n in range(50, 53):
        error = answer.commands[f"c{n}"].error
        assert error is not None
        assert error.code == "ERROR_BATCH_LENGTH_EXCEEDED"


async def test_halt_stops_at_the_first_failure_and_later_commands_are_not_applied(
    portal: RunningSandbox, client: BitrixClient
) -> None:
    commands = {
        "first": ("crm.item.update", {"entityTypeId": DEAL, "id": 1, "fields": {"title": "H1"}}),
        "broken": ("crm.item.update", {"entityTypeId": DEAL, "id": 999, "fields": {"title": "H"}}),
        "last": ("crm.item.update", {"entityTypeId": DEAL, "id": 2, "fields": {"title": "H2"}}),
    }
    answer = await client.batch(commands, halt=True)
    assert answer.commands["first"].ok
    assert answer.commands["broken"].error is not None
    assert not answer.commands["last"].ran
    assert _title(await _stored(portal, DEAL, 2)) != "H2"


@pytest.mark.parametrize(
    ("faults", "code", "status"),
    [
        ({"no_auth": True}, "NO_AUTH_FOUND", 401),
        ({"overload": True}, "OVERLOAD_LIMIT", 503),
        ({"portal_error": "insufficient_scope"}, "insufficient_scope", 403),
        ({"error_rate": 1.0}, "INTERNAL_SERVER_ERROR", 500),
    ],
)
async def test_portal_wide_faults_are_raised_for_calls_and_batches(
    portal: RunningSandbox,
    client: BitrixClient,
    faults: dict[str, Any],
    code: str,
    status: int,
) -> None:
    await _faults(portal, **faults)
    with pytest.raises(PortalError) as single:
        await client.call("crm.item.get", {"entityTypeId": DEAL, "id": 1})
    with pytest.raises(PortalError) as batch:
        await client.batch({"a": ("crm.item.get", {"entityTypeId": DEAL, "id": 1})})
    for caught in (single, batch):
        assert (caught.value.code, caught.value.status) == (code, status)


async def test_a_wrong_webhook_code_is_no_auth_found(portal: RunningSandbox) -> None:
    wrong = portal.webhook_url.replace("sandboxwebhook01", "wrongcode000")
    async with make_http_client(timeout_s=5.0) as http:
        client = BitrixClient(http=http, auth=WebhookAuth(wrong))
        with pytest.raises(PortalError) as caught:
            await client.call("crm.item.get", {"entityTypeId": DEAL, "id": 1})
    assert (caught.value.code, caught.value.status) == ("NO_AUTH_FOUND", 401)
    assert "wrongcode000" not in str(caught.value)


async def test_a_slow_answer_is_no_answer_that_may_have_been_sent(
    portal: RunningSandbox, client: BitrixClient
) -> None:
    await _faults(portal, latency_ms=400)
    async with make_http_client(timeout_s=0.1) as http:
        slow = BitrixClient(http=http, auth=WebhookAuth(portal.webhook_url))
        with pytest.raises(NoAnswerError) as caught:
            await slow.call("crm.item.get", {"entityTypeId": DEAL, "id": 1})
    assert caught.value.maybe_sent is True
    assert caught.value.kind == "ReadTimeout"


async def test_a_refused_connection_is_no_answer_that_was_not_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with make_http_client(timeout_s=1.0) as http:
        client = BitrixClient(http=http, auth=WebhookAuth(f"http://127.0.0.1:{port}/rest/1/code/"))
        with pytest.raises(NoAnswerError) as caught:
            await client.call("crm.item.get", {"entityTypeId": DEAL, "id": 1})
    assert caught.value.maybe_sent is False


async def test_limits_are_raised_for_a_call_and_per_command_inside_a_batch() -> None:
    clock = ManualClock()
    config = SandboxConfig(seed_items=3, operating_limit_s=1.0, operating_cost_s=0.5, rate_burst=6)
    async with (
        running_sandbox(config, clock=clock) as running,
        make_http_client(timeout_s=5.0) as http,
    ):
        client = BitrixClient(http=http, auth=WebhookAuth(running.webhook_url))
        update = (
            "crm.item.update",
            {"entityTypeId": DEAL, "id": 1, "fields": {"comments": "x"}},
        )
        operating = []
        for _ in range(3):
            answer = await client.call(*update)
            assert answer.time is not None
            operating.append(answer.time.operating)
        assert operating == [0.5, 1.0, 1.5]
        assert answer.time is not None
        assert answer.time.operating_reset_at is not None
        with pytest.raises(PortalError) as blocked:
            await client.call(*update)
        assert (blocked.value.code, blocked.value.status) == ("OPERATION_TIME_LIMIT", 429)
        mixed = await client.batch(
            {"upd": update, "get": ("crm.item.get", {"entityTypeId": DEAL, "id": 1})}
        )
        error = mixed.commands["upd"].error
        assert error is not None
        assert error.code == "OPERATION_TIME_LIMIT"
        assert mixed.commands["get"].ok
        await client.call("crm.item.get", {"entityTypeId": DEAL, "id": 1})
        with pytest.raises(PortalError) as limited:
            await client.call("crm.item.get", {"entityTypeId": DEAL, "id": 1})
        assert (limited.value.code, limited.value.status) == ("QUERY_LIMIT_EXCEEDED", 503)


async def test_concurrent_calls_share_one_keep_alive_client(
    portal: RunningSandbox, client: BitrixClient
) -> None:
    answers = await asyncio.gather(
        *(client.call("crm.item.get", {"entityTypeId": DEAL, "id": n}) for n in range(1, 31))
    )
    assert [a.result["item"]["id"] for a in answers] == list(range(1, 31))
