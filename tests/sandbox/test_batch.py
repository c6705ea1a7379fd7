"""batch over HTTP: commands as query strings, references, halt, the 50-command limit."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox


def batch(b24: SandboxClient, cmd: Any, *, halt: int = 0, form: bool = False) -> Any:
    return b24.ok("batch", {"halt": halt, "cmd": cmd}, form=form)


def test_commands_run_and_answer_by_name(b24: SandboxClient) -> None:
    result = batch(
        b24,
        {
            "one": "crm.item.update?entityTypeId=2&id=1&fields[title]=batched"
            "&fields[observers][]=3",
            "two": "crm.item.get?entityTypeId=2&id=1",
        },
    )
    assert result["result"]["two"]["item"]["title"] == "batched"
    assert result["result"]["two"]["item"]["observers"] == [3]
    assert result["result_error"] == []
    assert set(result["result_time"]) == {"one", "two"}
    assert result["result_total"] == []
    assert result["result_next"] == []


def test_failed_commands_go_to_result_error_and_the_batch_is_200(b24: SandboxClient) -> None:
    response = b24.call(
        "batch",
        {
            "cmd": {
                "bad": "crm.item.update?entityTypeId=2&id=999&fields[title]=x",
                "good": "crm.item.update?entityTypeId=2&id=1&fields[title]=ok",
            }
        },
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["result_error"] == {
        "bad": {"error": "NOT_FOUND", "error_description": "Item was not found."}
    }
    assert result["result"]["good"]["item"]["title"] == "ok"


def test_halt_stops_at_the_first_failure(b24: SandboxClient) -> None:
    cmd = {
        "a": "crm.item.update?entityTypeId=2&id=1&fields[title]=a",
        "b": "crm.item.update?entityTypeId=2&id=999&fields[title]=b",
        "c": "crm.item.update?entityTypeId=2&id=2&fields[title]=c",
    }
    result = batch(b24, cmd, halt=1)
    assert list(result["result"]) == ["a"]
    assert list(result["result_error"]) == ["b"]
    assert b24.item(2, 2)["title"] == "Deal #2"


def test_without_halt_later_commands_run(b24: SandboxClient) -> None:
    cmd = {
        "b": "crm.item.update?entityTypeId=2&id=999&fields[title]=b",
        "c": "crm.item.update?entityTypeId=2&id=2&fields[title]=c",
    }
    batch(b24, cmd, halt=0)
    assert b24.item(2, 2)["title"] == "c"


def test_references_to_earlier_results(b24: SandboxClient) -> None:
    cmd = {
        "new": "crm.item.add?entityTypeId=2&fields[title]=fresh",
        "copy": "crm.item.update?entityTypeId=2&id=1&fields[title]=$result[new][item][title]"
        "&fields[comments]=made from $result[new][item][id]",
        "list": "crm.item.list?entityTypeId=2&filter[id]=$result[new][item][id]",
    }
    result = batch(b24, cmd)
    new_id = result["result"]["new"]["item"]["id"]
    assert b24.item(2, 1)["title"] == "fresh"
    assert b24.item(2, 1)["comments"] == f"made from {new_id}"
    assert [i["id"] for i in result["result"]["list"]["items"]] == [new_id]
    assert result["result_total"] == {"list": 1}


def test_user_text_that_looks_like_a_reference_is_rewritten(b24: SandboxClient) -> None:
    batch(b24, {"x": "crm.item.update?entityTypeId=2&id=1&fields[comments]=pay $result[x] now"})
    assert b24.item(2, 1)["comments"] == "pay  now"
    b24.ok(
        "crm.item.update",
        {"entityTypeId": 2, "id": 1, "fields": {"comments": "pay $result[x] now"}},
    )
    assert b24.item(2, 1)["comments"] == "pay $result[x] now"


def test_fifty_commands_run_and_the_rest_each_get_length_exceeded(b24: SandboxClient) -> None:
    cmd = {f"c{i}": f"crm.item.get?entityTypeId=2&id={1 + i % 3}" for i in range(53)}
    response = b24.call("batch", {"cmd": cmd})
    assert response.status_code == 200
    result = response.json()["result"]
    assert len(result["result"]) == 50
    assert set(result["result_error"]) == {"c50", "c51", "c52"}
    assert result["result_error"]["c51"] == {
        "error": "ERROR_BATCH_LENGTH_EXCEEDED",
        "error_description": "Max batch length exceeded",
    }


def test_nested_batch_is_refused(b24: SandboxClient) -> None:
    result = batch(b24, {"inner": "batch?cmd[x]=crm.item.get"})
    assert result["result_error"]["inner"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


def test_unknown_method_inside_batch(b24: SandboxClient) -> None:
    result = batch(b24, {"x": "crm.nope?id=1"})
    assert result["result_error"]["x"]["error"] == "ERROR_METHOD_NOT_FOUND"


def test_batch_sent_as_a_form(b24: SandboxClient) -> None:
    cmd = {"a": "crm.item.update?entityTypeId=2&id=3&fields[title]=form batch"}
    result = batch(b24, cmd, form=True)
    assert result["result"]["a"]["item"]["title"] == "form batch"


def test_list_of_commands_answers_lists(b24: SandboxClient) -> None:
    result = batch(b24, ["crm.item.get?entityTypeId=2&id=1", "crm.item.get?entityTypeId=2&id=2"])
    assert [r["item"]["id"] for r in result["result"]] == [1, 2]


def test_list_command_reports_total_and_next(b24: SandboxClient) -> None:
    for n in range(60):
        b24.ok("crm.item.add", {"entityTypeId": 4, "fields": {"title": f"c{n}"}})
    result = batch(b24, {"page": "crm.item.list?entityTypeId=4"})
    assert result["result_total"] == {"page": 63}
    assert result["result_next"] == {"page": 50}


def test_batch_counts_once_and_each_command_is_counted_by_method(b24: SandboxClient) -> None:
    batch(b24, {"a": "crm.item.get?entityTypeId=2&id=1", "b": "crm.item.get?entityTypeId=2&id=2"})
    counters = b24.counters()
    assert counters["requests"] == 1
    assert counters["calls"] == {"batch": 1, "crm.item.get": 2}
