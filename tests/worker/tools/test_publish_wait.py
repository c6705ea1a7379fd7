"""`b24-worker publish --wait`: outcomes collected on a reply queue from a running worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.testing import RunningSandbox
from tests.worker.broker import connected
from tests.worker.e2e import force_error, running_worker, settings_for, stored
from tests.worker.tools.helpers import declared_topology, drain, run_tool, tool_env
from tests.worker.tools.test_publish import deal, jsonl

pytestmark = pytest.mark.rabbitmq


def table(stdout: str) -> dict[str, int]:
    """The summary table's rows: outcome -> count."""
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("outcome "))
    rows = {}
    for line in lines[start + 1 :]:
        name, _, count = line.rpartition(" ")
        if not count.isdigit():
            break
        rows[name.strip()] = int(count)
    return rows


@pytest.mark.sandbox
async def test_wait_reports_each_outcome_and_writes_the_failures(
    amqp_url: str, portal: RunningSandbox, tmp_path: Path
) -> None:
    settings = settings_for(amqp_url, portal)
    force_error(portal, "CRM_FIELD_ERROR_REQUIRED", item_id=4)
    source = jsonl(
        tmp_path / "batch.jsonl",
        deal(1, title="one"),
        deal(2, title="two"),
        deal(999, title="nobody"),
        deal(4, title="four"),
        deal(5, title="five"),
    )
    async with running_worker(settings) as worker, connected(amqp_url, worker.topology):
        env = tool_env(amqp_url, worker.topology)
        ran = await run_tool("publish", "--wait", "--timeout", "30", source, env=env)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert table(ran.stdout) == {
        "succeeded": 3,
        "failed not_found NOT_FOUND": 1,
        "failed validation CRM_FIELD_ERROR_REQUIRED": 1,
        "missing": 0,
    }
    assert "outcomes 5/5" in ran.stderr
    failures_file = tmp_path / "batch.failures.jsonl"
    assert f"2 failure events written to {failures_file}" in ran.stdout
    failures = [json.loads(line) for line in failures_file.read_text().splitlines()]
    assert sorted(event["id"] for event in failures) == [4, 999]
    assert {event["correlationId"].rsplit("-", 1)[1] for event in failures} == {"3", "4"}
    assert all(event["status"] == "failed" for event in failures)
    assert stored(portal, 2, 5)["title"] == "five"


@pytest.mark.sandbox
async def test_wait_exits_zero_when_everything_applied(
    amqp_url: str, portal: RunningSandbox, tmp_path: Path
) -> None:
    settings = settings_for(amqp_url, portal)
    source = tmp_path / "ok.csv"
    source.write_text("entityTypeId,id,title\n2,1,A\n2,2,B\n", encoding="utf-8")
    failures = tmp_path / "custom-failures.jsonl"
    async with running_worker(settings) as worker, connected(amqp_url, worker.topology):
        env = tool_env(amqp_url, worker.topology)
        ran = await run_tool("publish", "--wait", "--failures", str(failures), str(source), env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert table(ran.stdout) == {"succeeded": 2, "missing": 0}
    assert not failures.exists()
    assert (stored(portal, 2, 1)["title"], stored(portal, 2, 2)["title"]) == ("A", "B")


async def test_wait_counts_what_did_not_come_back_as_missing(amqp_url: str, tmp_path: Path) -> None:
    """No worker: both commands stay queued, and the run says which lines have no outcome."""
    source = jsonl(tmp_path / "two.jsonl", deal(1, title="a"), deal(2, title="b"))
    async with declared_topology(amqp_url) as (topology, broker):
        ran = await run_tool(
            "publish", "--wait", "--timeout", "1", source, env=tool_env(amqp_url, topology)
        )
        queued = await drain(broker, topology.update_queue)
    assert ran.returncode == 1
    assert table(ran.stdout) == {"succeeded": 0, "missing": 2}
    assert "no outcome within the timeout for lines 1, 2" in ran.stdout
    assert len(queued) == 2
    assert all(message.reply_to for message in queued)
