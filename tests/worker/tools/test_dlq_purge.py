"""`b24-worker dlq purge`: old letters of a class removed for good, after asking, and
the count said; everything else stays, in order."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from tests.worker.tools.helpers import declared_topology, drain, run_tool, tool_env
from tests.worker.tools.letters import as_stored, failure, fill
from worker.tools.broker import connect
from worker.tools.dlq import parse_age, purge
from worker.tools.letters import Selection

pytestmark = pytest.mark.rabbitmq

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=10)
RECENT = NOW - timedelta(days=1)


def letters() -> tuple[list[bytes], dict[int, datetime]]:
    """Six letters: which of them a purge of old transient ones takes is in the name."""
    bodies = [
        failure(1, "transient", failed_at=OLD),  # taken
        failure(2, "transient", failed_at=RECENT),  # too young
        failure(3, "validation", failed_at=OLD),  # another class
        failure(4, "transient"),  # no failedAt: its AMQP timestamp is old: taken
        failure(5, "transient"),  # no failedAt, no timestamp: age unknown, kept
        failure(6, "transient", failed_at=OLD),  # taken
    ]
    return bodies, {4: OLD}


async def test_purge_removes_old_letters_of_a_class_and_says_how_many(amqp_url: str) -> None:
    bodies, timestamps = letters()
    async with declared_topology(amqp_url) as (topology, broker):
        await fill(broker, topology.dead_letter_queue, bodies, timestamps=timestamps)
        ran = await run_tool(
            "dlq",
            "purge",
            "--class",
            "transient",
            "--older-than",
            "7d",
            "--yes",
            env=tool_env(amqp_url, topology),
        )
        left = await drain(broker, topology.dead_letter_queue)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == (
        f"removed 3 dead letters from {topology.dead_letter_queue}; read 6, 3 of those stay; "
        "1 matching letters of unknown age kept"
    )
    assert [as_stored(m)[0] for m in left] == [bodies[1], bodies[2], bodies[4]]


async def test_purge_without_yes_away_from_a_terminal_removes_nothing(amqp_url: str) -> None:
    bodies, timestamps = letters()
    async with declared_topology(amqp_url) as (topology, broker):
        await fill(broker, topology.dead_letter_queue, bodies, timestamps=timestamps)
        ran = await run_tool(
            "dlq", "purge", "--class", "transient", env=tool_env(amqp_url, topology)
        )
        left = await drain(broker, topology.dead_letter_queue)
    assert ran.returncode == 2
    assert "add --yes" in ran.stderr
    assert [as_stored(m)[0] for m in left] == bodies


async def test_purge_asks_with_the_count_and_a_no_keeps_everything(amqp_url: str) -> None:
    bodies, timestamps = letters()
    asked: list[int] = []

    def refuse(count: int) -> bool:
        asked.append(count)
        return False

    def accept(count: int) -> bool:
        asked.append(count)
        return True

    async with declared_topology(amqp_url) as (topology, broker):
        await fill(broker, topology.dead_letter_queue, bodies, timestamps=timestamps)
        connection = await connect(amqp_url)
        async with connection:
            out = io.StringIO()
            selection = Selection(error_class="transient")
            age = parse_age("7d")
            queue = topology.dead_letter_queue
            said_no = await purge(
                connection, queue, selection, older_than=age, confirm=refuse, out=out
            )
            kept = await drain(broker, queue)
            assert [as_stored(m)[0] for m in kept] == bodies  # all there, in order
            await fill(broker, queue, bodies, timestamps=timestamps)
            said_yes = await purge(
                connection, queue, selection, older_than=age, confirm=accept, out=out
            )
        left = await drain(broker, topology.dead_letter_queue)
    assert (said_no, said_yes) == (1, 0)
    assert asked == [3, 3]
    assert out.getvalue().startswith("nothing removed\nremoved 3 dead letters")
    assert [as_stored(m)[0] for m in left] == [bodies[1], bodies[2], bodies[4]]


@pytest.mark.parametrize(
    ("text", "age"),
    [("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)), ("7", timedelta(days=7))],
)
def test_ages_are_read_with_their_unit(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["", "7w", "-1d", "d"])
def test_a_bad_age_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="such as 30m, 12h or 7d"):
        parse_age(text)
