"""BitrixClient over a scripted transport: envelopes, batch maps, failures, what is raised."""

from __future__ import annotations

import errno
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

import worker.bitrix.transport as transport
from tests.worker.bitrix.fakes import WEBHOOK_URL, ScriptedPortal, connect_error, envelope, error
from worker.bitrix import (
    BitrixClient,
    CommandError,
    NoAnswerError,
    PortalError,
    TimeInfo,
    UnexpectedAnswerError,
    WebhookAuth,
)


def _client(portal: ScriptedPortal) -> BitrixClient:
    return BitrixClient(http=portal.client(), auth=WebhookAuth(WEBHOOK_URL))


async def test_call_posts_json_to_the_webhook_and_returns_result_and_time() -> None:
    portal = ScriptedPortal(
        [envelope({"item": {"id": 5}}, operating=3.25, operating_reset_at=1700000000)]
    )
    answer = await _client(portal).call(
        "crm.item.update", {"entityTypeId": 2, "id": 5, "fields": {"title": "é", "x": None}}
    )
    assert answer.ok
    assert answer.result == {"item": {"id": 5}}
    assert answer.time == TimeInfo(
        operating=3.25, operating_reset_at=1700000000.0, processing=0.1, duration=0.2
    )
    request = portal.requests[0]
    assert request.method == "POST"
    assert str(request.url) == WEBHOOK_URL + "crm.item.update"
    assert request.headers["content-type"] == "application/json"
    assert portal.body() == {"entityTypeId": 2, "id": 5, "fields": {"title": "é", "x": None}}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (503, "QUERY_LIMIT_EXCEEDED"),
        (503, "OVERLOAD_LIMIT"),
        (429, "OPERATION_TIME_LIMIT"),
        (401, "NO_AUTH_FOUND"),
        (403, "insufficient_scope"),
        (500, "INTERNAL_SERVER_ERROR"),
        (400, "NOT_FOUND"),
        (400, ""),
    ],
)
async def test_an_error_envelope_is_raised_with_code_description_and_status(
    status: int, code: str
) -> None:
    portal = ScriptedPortal([error(status, code, "what went wrong")])
    with pytest.raises(PortalError) as caught:
        await _client(portal).call("crm.item.update", {"id": 1})
    assert (caught.value.code, caught.value.description, caught.value.status) == (
        code,
        "what went wrong",
        status,
    )
    assert len(portal.requests) == 1


async def test_a_numeric_error_code_is_read_as_text() -> None:
    portal = ScriptedPortal([httpx.Response(400, json={"error": 100, "error_description": "x"})])
    with pytest.raises(PortalError) as caught:
        await _client(portal).call("crm.item.update", {})
    assert caught.value.code == "100"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, html="<html><body>Bad Gateway</body></html>"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"time": {}}),
        httpx.Response(502, json={"result": True}),
        httpx.Response(200, content=b"\xff\xfe{"),
    ],
)
async def test_an_answer_that_is_not_an_envelope_is_unexpected(response: httpx.Response) -> None:
    portal = ScriptedPortal([response])
    with pytest.raises(UnexpectedAnswerError) as caught:
        await _client(portal).call("crm.item.update", {})
    assert caught.value.status == response.status_code


@pytest.mark.parametrize(
    ("failure", "maybe_sent"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow connect"), False),
        (httpx.PoolTimeout("no free connection"), False),
        (httpx.ReadTimeout("slow answer"), True),
        (httpx.WriteTimeout("slow write"), True),
        (httpx.ReadError("reset"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
    ],
)
async def test_no_answer_says_whether_the_request_may_have_been_sent(
    failure: Exception, maybe_sent: bool
) -> None:
    portal = ScriptedPortal([failure])
    with pytest.raises(NoAnswerError) as caught:
        await _client(portal).call("crm.item.update", {})
    assert caught.value.maybe_sent is maybe_sent
    assert caught.value.kind == type(failure).__name__
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def _batch_result(**maps: Any) -> httpx.Response:
    names = ("result", "result_error", "result_total", "result_next", "result_time")
    result: dict[str, Any] = {key: [] for key in names}
    result.update(maps)
    return envelope(result, operating=0)


async def test_batch_maps_results_errors_and_times_back_by_name() -> None:
    portal = ScriptedPortal(
        [
            _batch_result(
                result={"u1": {"item": {"id": 1}}},
                result_error={
                    "u2": {"error": "NOT_FOUND", "error_description": "Item was not found."}
                },
                result_time={"u1": {"operating": 2.5, "operating_reset_at": 1700000100}},
            )
        ]
    )
    answer = await _client(portal).batch(
        {
            "u1": ("crm.item.update", {"entityTypeId": 2, "id": 1, "fields": {"title": "a"}}),
            "u2": ("crm.item.update", {"entityTypeId": 2, "id": 999, "fields": {"title": "b"}}),
        }
    )
    assert portal.body() == {
        "halt": 0,
        "cmd": {
            "u1": "crm.item.update?entityTypeId=2&id=1&fields[title]=a",
            "u2": "crm.item.update?entityTypeId=2&id=999&fields[title]=b",
        },
    }
    assert str(portal.requests[0].url) == WEBHOOK_URL + "batch"
    u1, u2 = answer.commands["u1"], answer.commands["u2"]
    assert u1.ok
    assert u1.result == {"item": {"id": 1}}
    assert u1.time is not None
    assert u1.time.operating == 2.5
    assert u1.time.operating_reset_at == 1700000100
    assert not u2.ok
    assert u2.ran
    assert u2.error == CommandError(code="NOT_FOUND", description="Item was not found.")
    assert answer.time is not None
    assert answer.time.operating == 0


async def test_batch_with_halt_marks_the_commands_it_never_ran() -> None:
    portal = ScriptedPortal(
        [
            _batch_result(
                result={"a": True},
                result_error={"b": {"error": "", "error_description": "stage"}},
            )
        ]
    )
    commands = {name: ("crm.item.update", {"id": 1}) for name in ("a", "b", "c")}
    answer = await _client(portal).batch(commands, halt=True)
    assert portal.body()["halt"] == 1
    assert list(answer.commands) == ["a", "b", "c"]
    assert answer.commands["a"].ok
    assert answer.commands["b"].error == CommandError(code="", description="stage")
    assert not answer.commands["c"].ran
    assert not answer.commands["c"].ok
    assert answer.commands["c"].error is None


async def test_batch_reads_empty_maps_sent_as_lists_and_names_0_to_n_as_a_list() -> None:
    portal = ScriptedPortal(
        [_batch_result(result=[{"item": {"id": 1}}, {"item": {"id": 2}}], result_time=[{}, {}])]
    )
    answer = await _client(portal).batch({str(i): ("crm.item.get", {"id": i}) for i in range(2)})
    assert answer.commands["1"].result == {"item": {"id": 2}}
    assert answer.commands["0"].error is None


async def test_a_batch_answered_with_an_error_envelope_raises() -> None:
    portal = ScriptedPortal([error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")])
    with pytest.raises(PortalError) as caught:
        await _client(portal).batch({"a": ("crm.item.update", {"id": 1})})
    assert (caught.value.code, caught.value.status, caught.value.method) == (
        "QUERY_LIMIT_EXCEEDED",
        503,
        "batch",
    )


async def test_a_batch_whose_result_is_not_a_map_is_unexpected() -> None:
    portal = ScriptedPortal([envelope({"result": "oops"})])
    with pytest.raises(UnexpectedAnswerError):
        await _client(portal).batch({"a": ("crm.item.update", {"id": 1})})


@pytest.mark.parametrize(
    "commands",
    [
        {"a": ("crm.item.update", {"fields": {"comments": "pay $result[x]"}})},
        {"a": ("crm.item.update", {"fields": {"title": None}})},
        {"a": ("batch", {"cmd": {"x": "y"}})},
        {"a": ("crm.item.update?x=1", {})},
        {"": ("crm.item.update", {"id": 1})},
        {},
    ],
)
async def test_batch_refuses_commands_that_would_not_arrive_as_sent(
    commands: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    portal = ScriptedPortal([_batch_result()])
    with pytest.raises(ValueError, match=r"\w"):
        await _client(portal).batch(commands)
    assert portal.requests == []


async def test_call_refuses_a_method_name_that_is_not_one() -> None:
    portal = ScriptedPortal([envelope(True)])
    with pytest.raises(ValueError, match="method"):
        await _client(portal).call("../../oauth/token", {})
    assert portal.requests == []


async def test_a_process_out_of_file_descriptors_is_named_and_logged_once_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "_out_of_files_said_at", None)
    portal = ScriptedPortal([connect_error(errno.EMFILE)] * 2)
    client = _client(portal)
    with capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(NoAnswerError) as caught:
                await client.call("crm.item.update", {})
            assert caught.value.kind == "ConnectError (too many open files)"
            assert caught.value.maybe_sent is False
            assert caught.value.out_of_files is True
    said = [line for line in logs if line["event"] == "process.out_of_files"]
    assert len(said) == 1
    assert said[0]["where"] == WebhookAuth(WEBHOOK_URL).where
    assert said[0]["log_level"] == "error"
