"""`b24-worker publish FILE`: what lands on the queue, what is refused, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import aio_pika
import pytest

from tests.worker.tools.helpers import bodies, declared_topology, drain, run_tool, tool_env

pytestmark = pytest.mark.rabbitmq


def jsonl(path: Path, *commands: dict[str, object] | str) -> str:
    path.write_text(
        "".join((c if isinstance(c, str) else json.dumps(c)) + "\n" for c in commands),
        encoding="utf-8",
    )
    return str(path)


def deal(item_id: int, **fields: object) -> dict[str, object]:
    return {"entityTypeId": 2, "id": item_id, "fields": fields}


async def test_commands_land_in_file_order_persistent_with_ids(
    amqp_url: str, tmp_path: Path
) -> None:
    commands = [deal(n, title=f"Deal {n}") for n in range(1, 601)]
    source = jsonl(tmp_path / "deals.jsonl", *commands)
    async with declared_topology(amqp_url) as (topology, broker):
        ran = await run_tool("publish", source, env=tool_env(amqp_url, topology))
        queued = await drain(broker, topology.update_queue)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"published 600 of 600 commands to {topology.update_queue}" in ran.stdout
    assert "published 600/600" in ran.stderr  # the progress counter's closing line
    assert bodies(queued) == commands
    assert {m.delivery_mode for m in queued} == {aio_pika.DeliveryMode.PERSISTENT}
    assert {m.content_type for m in queued} == {"application/json"}
    assert len({m.message_id for m in queued}) == 600
    correlation = [m.correlation_id or "" for m in queued]
    assert len(set(correlation)) == 600
    assert [c.rsplit("-", 1)[1] for c in correlation[:3]] == ["1", "2", "3"]  # the line
    assert all(m.reply_to is None for m in queued)


async def test_an_invalid_line_stops_the_run_before_anything_is_sent(
    amqp_url: str, tmp_path: Path
) -> None:
    source = jsonl(
        tmp_path / "mixed.jsonl", deal(1, title="ok"), deal(2, opened=1), "not json", deal(3)
    )
    async with declared_topology(amqp_url) as (topology, broker):
        ran = await run_tool("publish", source, env=tool_env(amqp_url, topology))
        queued = await drain(broker, topology.update_queue)
    assert ran.returncode == 1
    assert queued == []
    lines = ran.stdout.splitlines()
    assert lines[0].startswith(f"{source}:2: INVALID fields.opened")
    assert lines[1].startswith(f"{source}:3: INVALID")
    assert lines[2] == (
        "2 of 4 commands invalid: nothing published (--skip-invalid publishes the valid ones)"
    )


async def test_skip_invalid_publishes_the_valid_lines_and_still_fails(
    amqp_url: str, tmp_path: Path
) -> None:
    source = jsonl(tmp_path / "mixed.jsonl", deal(1, title="a"), deal(2, opened=1), deal(3))
    async with declared_topology(amqp_url) as (topology, broker):
        ran = await run_tool("publish", "--skip-invalid", source, env=tool_env(amqp_url, topology))
        queued = await drain(broker, topology.update_queue)
    assert ran.returncode == 1
    assert bodies(queued) == [deal(1, title="a"), deal(3)]
    assert "published 2 of 3 commands" in ran.stdout
    assert f"{source}:2: INVALID" in ran.stdout


async def test_csv_cells_are_text_unless_the_column_says_json(
    amqp_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "deals.csv"
    source.write_text(
        "entityTypeId,id,title,opportunity:json,observers:json,ufCrm_1:json\n"
        '2,1,"Deal, one",100.5,"[1,2]",\n'
        '2,2,007,,null,"""text"""\n'
        "\n"
        '3,3,,,,{"a": 1}\n',
        encoding="utf-8",
    )
    async with declared_topology(amqp_url) as (topology, broker):
        ran = await run_tool("publish", str(source), env=tool_env(amqp_url, topology))
        queued = await drain(broker, topology.update_queue)
    assert ran.returncode == 0, ran.stdout
    assert bodies(queued) == [
        deal(1, title="Deal, one", opportunity=100.5, observers=[1, 2]),
        deal(2, title="007", observers=None, ufCrm_1="text"),
        {"entityTypeId": 3, "id": 3, "fields": {"ufCrm_1": {"a": 1}}},
    ]


async def test_csv_problems_name_their_line(amqp_url: str, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(
        'entityTypeId,id,title,observers:json\n2,1,ok,\n2,x,,\n2,3,,"[1,\n2]"\n2,4,,[oops\n',
        encoding="utf-8",
    )
    async with declared_topology(amqp_url) as (topology, broker):
        ran = await run_tool("publish", str(source), env=tool_env(amqp_url, topology))
        queued = await drain(broker, topology.update_queue)
    assert ran.returncode == 1
    assert queued == []
    problems = [line.split(": INVALID")[0] for line in ran.stdout.splitlines() if "INVALID" in line]
    assert problems == [f"{source}:3", f"{source}:6"]  # a quoted cell spans lines 4 and 5
    assert "observers: not JSON" in ran.stdout


async def test_a_csv_without_the_id_columns_is_refused(amqp_url: str, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("entityTypeId,title\n2,x\n", encoding="utf-8")
    ran = await run_tool("publish", str(source), env=tool_env(amqp_url))
    assert ran.returncode == 2
    assert "the header row needs the columns id" in ran.stderr


async def test_a_missing_queue_is_an_error_not_a_silent_drop(amqp_url: str, tmp_path: Path) -> None:
    source = jsonl(tmp_path / "one.jsonl", deal(1, title="x"))
    ran = await run_tool(
        "publish", source, env=tool_env(amqp_url, UPDATE_QUEUE="test.no-such-queue")
    )
    assert ran.returncode == 2
    assert "queue 'test.no-such-queue' does not exist" in ran.stderr


async def test_nacked_publishes_are_retried_then_reported(amqp_url: str, tmp_path: Path) -> None:
    """A queue that holds one message and rejects more nacks the second and third."""
    source = jsonl(tmp_path / "three.jsonl", deal(1), deal(2), deal(3))
    async with declared_topology(amqp_url) as (topology, broker):
        channel = await broker.channel()
        full = f"{topology.update_queue}.small"
        await channel.declare_queue(
            full, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        try:
            ran = await run_tool(
                "publish", "--queue", full, source, env=tool_env(amqp_url, topology)
            )
            queued = await drain(broker, full)
        finally:
            await channel.queue_delete(full)
    assert ran.returncode == 1
    assert bodies(queued) == [deal(1)]
    assert "published 1 of 3 commands" in ran.stdout
    assert "(0 invalid, 2 not confirmed)" in ran.stdout
    assert f"{source}:2: NOT CONFIRMED the broker refused the message 5 times (nack)" in ran.stdout


async def test_an_unreachable_broker_is_said_without_its_password(tmp_path: Path) -> None:
    source = jsonl(tmp_path / "one.jsonl", deal(1))
    ran = await run_tool("publish", source, env=tool_env("amqp://app:Br0kerPassw0rd@127.0.0.1:1/"))
    assert ran.returncode == 2
    assert "cannot reach the broker at amqp://app:***@127.0.0.1:1/" in ran.stderr
    assert "Br0kerPassw0rd" not in ran.stdout + ran.stderr


async def test_a_job_id_that_breaks_the_rule_is_refused_before_anything_is_sent(
    amqp_url: str, tmp_path: Path
) -> None:
    source = jsonl(tmp_path / "deals.jsonl", deal(1, title="ok"))
    store = tmp_path / "portals.sqlite3"
    async with declared_topology(amqp_url) as (topology, broker):
        env = tool_env(amqp_url, topology, REGISTRY_PATH=str(store))
        ran = await run_tool("publish", source, "--job", "prices/2026", env=env)
        queued = await drain(broker, topology.update_queue)
    assert ran.returncode == 2
    assert "--job 'prices/2026': a job id is 1-128 letters" in ran.stderr
    assert queued == []
    assert not store.exists()
