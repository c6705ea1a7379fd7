"""Both limits over HTTP on a manual clock: 503 QUERY_LIMIT_EXCEEDED, 429 OPERATION_TIME_LIMIT."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.clock import ManualClock
from sandbox.config import SandboxConfig
from sandbox.limits import OperatingCost
from sandbox.testing import RunningSandbox, serve_in_thread
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox

GET = {"entityTypeId": 2, "id": 1}
CONFIG = SandboxConfig(seed_items=2, operating_costs=(("crm.item.update", 100.0),))


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def limited(clock: ManualClock) -> Iterator[RunningSandbox]:
    with serve_in_thread(CONFIG, clock=clock) as portal:
        yield portal


@pytest.fixture
def b24(limited: RunningSandbox) -> Iterator[SandboxClient]:
    client = SandboxClient(limited)
    client.reset()
    yield client
    client.close()


def burst(b24: SandboxClient, n: int) -> list[httpx.Response]:
    return [b24.call("crm.item.get", GET) for _ in range(n)]


def test_the_request_after_the_fiftieth_is_refused_with_503(b24: SandboxClient) -> None:
    responses = burst(b24, 51)
    assert [r.status_code for r in responses[:50]] == [200] * 50
    assert responses[50].status_code == 503
    assert responses[50].json() == {
        "error": "QUERY_LIMIT_EXCEEDED",
        "error_description": "Too many requests",
    }
    assert b24.counters()["query_limit_rejections"] == 1


def test_the_bucket_drains_two_per_second(b24: SandboxClient, clock: ManualClock) -> None:
    burst(b24, 50)
    clock.advance(1.0)
    assert [r.status_code for r in burst(b24, 3)] == [200, 200, 503]
    clock.advance(0.5)
    assert [r.status_code for r in burst(b24, 2)] == [200, 503]


def test_a_batch_counts_once(b24: SandboxClient) -> None:
    burst(b24, 49)
    cmd = {f"c{i}": "crm.item.get?entityTypeId=2&id=1" for i in range(50)}
    response = b24.call("batch", {"cmd": cmd})
    assert response.status_code == 200
    assert len(response.json()["result"]["result"]) == 50
    assert b24.call("batch", {"cmd": cmd}).status_code == 503


def update(b24: SandboxClient, title: str) -> httpx.Response:
    return b24.call("crm.item.update", {"entityTypeId": 2, "id": 1, "fields": {"title": title}})


def test_operating_accumulates_per_method_in_the_envelope(
    b24: SandboxClient, clock: ManualClock
) -> None:
    first = update(b24, "a").json()["time"]
    second = update(b24, "b").json()["time"]
    assert (first["operating"], second["operating"]) == (100.0, 200.0)
    assert second["processing"] == 100.0
    assert second["operating_reset_at"] == clock.time() // 60 * 60 + 600
    assert b24.call("crm.item.get", GET).json()["time"]["operating"] == 0.5


def test_method_blocked_with_429_after_the_operating_limit(
    b24: SandboxClient, clock: ManualClock
) -> None:
    statuses = [update(b24, str(n)).status_code for n in range(6)]
    assert statuses == [200, 200, 200, 200, 200, 429]
    blocked = update(b24, "x")
    assert blocked.json() == {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
    }
    assert "retry-after" not in blocked.headers
    assert b24.call("crm.item.get", GET).status_code == 200, "other methods are not blocked"
    clock.advance(600)
    assert update(b24, "after the window").status_code == 200
    assert b24.counters()["operation_limit_rejections"] == 2


def test_batch_charges_each_nested_command_to_its_method(b24: SandboxClient) -> None:
    cmd = {f"u{i}": f"crm.item.update?entityTypeId=2&id=1&fields[title]=t{i}" for i in range(6)}
    cmd["g"] = "crm.item.get?entityTypeId=2&id=1"
    body = b24.call("batch", {"cmd": cmd}).json()
    result = body["result"]
    assert [result["result_time"][f"u{i}"]["operating"] for i in range(5)] == [
        100.0,
        200.0,
        300.0,
        400.0,
        500.0,
    ]
    assert result["result_error"]["u5"]["error"] == "OPERATION_TIME_LIMIT"
    assert result["result_time"]["g"]["operating"] == 0.5
    assert body["time"]["operating"] == 0.0, "the outer batch is not charged"
    assert update(b24, "single").status_code == 429


def test_limits_can_be_switched_off_at_run_time(b24: SandboxClient) -> None:
    b24.http.patch(f"{b24.portal.control_url}/limits", json={"enabled": False})
    assert all(r.status_code == 200 for r in burst(b24, 60))
    state = b24.http.get(f"{b24.portal.control_url}/limits").json()
    assert state["enabled"] is False


VARYING = SandboxConfig(
    seed_items=2,
    random_seed=21,
    operating_costs=(("crm.item.update", OperatingCost(0.05, 0.8)),),
)


@pytest.fixture(scope="module")
def varying(clock: ManualClock) -> Iterator[SandboxClient]:
    with serve_in_thread(VARYING, clock=clock) as portal:
        client = SandboxClient(portal)
        yield client
        client.close()


def test_a_cost_range_draws_each_update_s_cost_and_repeats_after_a_reset(
    varying: SandboxClient,
) -> None:
    varying.reset()
    cmd = {f"u{i}": f"crm.item.update?entityTypeId=2&id=1&fields[title]=t{i}" for i in range(30)}
    times = varying.call("batch", {"cmd": cmd}).json()["result"]["result_time"]
    costs = [times[f"u{i}"]["processing"] for i in range(30)]
    assert all(0.05 <= c <= 0.8 for c in costs)
    assert len(set(costs)) == 30, "each nested update draws its own cost"
    charged = sum(c for c in costs if c >= 0.1)  # the portal does not charge cheaper calls
    counters = varying.counters()
    assert counters["operating_charged_s"] == {"webhook:1:crm.item.update": round(charged, 6)}
    assert counters["operating"]["webhook:1:crm.item.update"] == pytest.approx(charged)

    varying.reset()
    again = varying.call("batch", {"cmd": cmd}).json()["result"]["result_time"]
    assert [again[f"u{i}"]["processing"] for i in range(30)] == costs, "the seed repeats a run"


# A batch charged as a whole (--batch-charging batch) -------------------------------------

WHOLE = SandboxConfig(
    seed_items=2, operating_costs=(("crm.item.update", 100.0),), batch_charging="batch"
)


@pytest.fixture(scope="module")
def whole(clock: ManualClock) -> Iterator[SandboxClient]:
    with serve_in_thread(WHOLE, clock=clock) as portal:
        client = SandboxClient(portal)
        yield client
        client.close()


def updates(count: int, start: int = 0) -> dict[str, str]:
    return {
        f"u{i}": f"crm.item.update?entityTypeId=2&id=1&fields[title]=t{i}"
        for i in range(start, start + count)
    }


def test_a_batch_charged_as_a_whole_reports_the_batch_s_running_total_in_every_entry(
    whole: SandboxClient, clock: ManualClock
) -> None:
    whole.reset()
    first = whole.call("batch", {"cmd": updates(3)}).json()
    times = first["result"]["result_time"]
    assert [times[f"u{i}"]["operating"] for i in range(3)] == [300.0] * 3
    reset_at = clock.time() // 60 * 60 + 600
    assert {times[f"u{i}"]["operating_reset_at"] for i in range(3)} == {reset_at}
    assert [times[f"u{i}"]["processing"] for i in range(3)] == [100.0] * 3, "each its own cost"
    assert first["time"]["operating"] == 300.0, "the outer batch is charged"
    second = whole.call("batch", {"cmd": updates(2, start=3)}).json()["result"]["result_time"]
    assert [second[f"u{i}"]["operating"] for i in range(3, 5)] == [500.0, 500.0]
    charged = whole.counters()["operating_charged_s"]
    assert charged == {"webhook:1:batch": 500.0}, "nothing charged to crm.item.update"


def test_a_batch_charged_as_a_whole_is_refused_whole_once_batch_is_over_the_limit(
    whole: SandboxClient, clock: ManualClock
) -> None:
    whole.reset()
    full = whole.call("batch", {"cmd": updates(4)}).json()["result"]
    assert full["result_error"] == []
    assert whole.call("batch", {"cmd": updates(1)}).status_code == 200  # 400 s: not over yet
    refused = whole.call("batch", {"cmd": updates(3)})
    assert refused.status_code == 429
    assert refused.json()["error"] == "OPERATION_TIME_LIMIT"
    assert whole.item(2, 1)["title"] == "t0", "a refused batch runs none of its commands"
    single = update(whole, "single")
    assert single.status_code == 200, "a single call is charged to its own method"
    assert single.json()["time"]["operating"] == 100.0
    counters = whole.counters()
    assert counters["operation_limit_rejections"] == 1
    assert counters["operating_charged_s"] == {
        "webhook:1:batch": 500.0,
        "webhook:1:crm.item.update": 100.0,
    }
    clock.advance(600)
    assert whole.call("batch", {"cmd": updates(1)}).status_code == 200


def test_a_batch_charged_as_a_whole_is_charged_once_what_its_commands_cost_together(
    clock: ManualClock,
) -> None:
    cheap = SandboxConfig(
        seed_items=2, operating_costs=(("crm.item.update", 0.06),), batch_charging="batch"
    )
    with serve_in_thread(cheap, clock=clock) as portal:
        client = SandboxClient(portal)
        try:
            lone = client.call("batch", {"cmd": updates(1)}).json()["result"]["result_time"]
            assert lone["u0"]["operating"] == 0.0, "0.06 s is under the charging floor"
            pair = client.call("batch", {"cmd": updates(2)}).json()["result"]["result_time"]
            assert [pair["u0"]["operating"], pair["u1"]["operating"]] == [0.12, 0.12]
        finally:
            client.close()


def test_a_batch_charged_as_a_whole_runs_while_its_commands_method_is_blocked(
    whole: SandboxClient,
) -> None:
    whole.reset()
    assert [update(whole, str(n)).status_code for n in range(6)][-1] == 429
    result = whole.call("batch", {"cmd": updates(2)}).json()["result"]
    assert result["result_error"] == []
    assert result["result_time"]["u1"]["operating"] == 200.0
