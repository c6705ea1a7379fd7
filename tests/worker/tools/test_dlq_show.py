"""`b24-worker dlq show`: grouped output, and the queue left exactly as it was."""

from __future__ import annotations

import json

import pytest

from tests.worker.tools.helpers import declared_topology, drain, run_tool, tool_env
from tests.worker.tools.letters import as_stored, failure, fill

pytestmark = pytest.mark.rabbitmq


def mixed_letters() -> list[bytes]:
    """130 letters, classes interleaved, with two that are not failure events."""
    classes = ["transient", "validation", "transient", "not_found", "validation"]
    letters = [failure(n, classes[n % len(classes)]) for n in range(1, 129)]
    letters.insert(10, b"not an event")
    letters.insert(70, b'{"status": "failed"}')
    return letters


async def test_show_leaves_every_letter_in_place_in_order(amqp_url: str) -> None:
    """More letters than the broker returns in order by accident (its hash maps reorder
    beyond 32 entries), so a reader that scrambled them would be caught here."""
    letters = mixed_letters()
    async with declared_topology(amqp_url) as (topology, broker):
        queue = topology.dead_letter_queue
        await fill(broker, queue, letters)
        before = [
            (body, f"dl-{n}", {"position": n, "note": "kept"})
            for n, body in enumerate(letters, start=1)
        ]
        ran = await run_tool("dlq", "show", env=tool_env(amqp_url, topology))
        ran_again = await run_tool("dlq", "show", env=tool_env(amqp_url, topology))
        after = await drain(broker, queue)
    assert ran.returncode == 0, ran.stderr
    assert ran_again.stdout == ran.stdout
    assert [as_stored(message) for message in after] == before
    assert all(message.redelivered for message in after)  # show did hold each one
    assert {m.content_type for m in after} == {"application/json"}
    lines = ran.stdout.splitlines()
    assert lines[0] == f"{queue}: 130 of 130 dead letters read, 130 match"
    groups = [line for line in lines if not line.startswith("  ")][1:]
    assert groups == [
        "transient ATTEMPTS_EXHAUSTED: 51",
        "validation VALIDATION: 51",
        "not_found NOT_FOUND: 26",
        "unreadable -: 2",
    ]
    assert "  #1 m-1 2/1 VALIDATION reason 1" in lines
    assert "  #2 m-2 2/2 ATTEMPTS_EXHAUSTED reason 2" in lines
    assert "  #11 dl-11 'not an event'" in lines


async def test_show_filters_by_class_and_code_and_limits_the_list(amqp_url: str) -> None:
    async with declared_topology(amqp_url) as (topology, broker):
        await fill(broker, topology.dead_letter_queue, mixed_letters())
        env = tool_env(amqp_url, topology)
        by_class = await run_tool("dlq", "show", "--class", "validation", "--limit", "3", env=env)
        as_json = await run_tool("dlq", "show", "--code", "NOT_FOUND", "--json", env=env)
        remaining = await drain(broker, topology.dead_letter_queue)
    assert by_class.stdout.splitlines()[1:] == [
        "validation VALIDATION: 51",
        "  #1 m-1 2/1 VALIDATION reason 1",
        "  #4 m-4 2/4 VALIDATION reason 4",
        "  #6 m-6 2/6 VALIDATION reason 6",
        "(48 more not listed; --limit 3)",
    ]
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(events) == 26
    assert {e["event"]["error"]["code"] for e in events} == {"NOT_FOUND"}
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert "26 match" in as_json.stderr
    assert len(remaining) == 130


async def test_show_and_replay_take_one_portals_letters(amqp_url: str) -> None:
    """--portal: the portal the event names, or, for a portal the worker did not serve
    yet (registered after its commands failed), the one their header names."""
    letters = [
        failure(1, "validation", portal="north", served="north"),
        failure(2, "validation", portal="south"),  # south was not known then
        failure(3, "not_found", portal="south", served="south"),
        failure(4, "validation"),
        failure(5, "validation", portal="north", served="north"),
    ]
    async with declared_topology(amqp_url) as (topology, broker):
        await fill(broker, topology.dead_letter_queue, letters)
        env = tool_env(amqp_url, topology)
        shown = await run_tool("dlq", "show", "--portal", "south", "--json", env=env)
        replayed = await run_tool("dlq", "replay", "--portal", "south", env=env)
        sent = await drain(broker, topology.update_queue)
        remaining = await drain(broker, topology.dead_letter_queue)
    assert [json.loads(line)["event"]["messageId"] for line in shown.stdout.splitlines()] == [
        "m-2",
        "m-3",
    ]
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert [m.message_id for m in sent] == ["m-2", "m-3"]
    assert [m.headers["x-b24-portal"] for m in sent] == ["south", "south"]
    assert [json.loads(m.body)["messageId"] for m in remaining] == ["m-1", "m-4", "m-5"]
