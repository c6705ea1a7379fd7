"""Coalescing (COALESCE=safe) in memory: which commands of an item ride in one call,
what each one's event says, and what happens when the merged call is not applied.

The limiter holds the first call back while an item's commands arrive, so they
all wait in the pipeline when the call leaves, as behind a portal's pace.
"""

from __future__ import annotations

from typing import Any

from schemas.events import ErrorClass
from tests.worker.flow.memory import MemoryFlow, deal
from tests.worker.flow.test_pipeline import applied
from worker.flow.calling import Again, Decision, PortalDown
from worker.flow.jobs import Job
from worker.flow.outcomes import Failed, Retry, Settled, Succeeded


def parts(job: Job) -> list[str]:
    return [part.message_id for part in job.parts] or [job.message_id]


class Portal:
    """`applied`, recording the commands each call's command carried, with a scripted
    answer for the calls that carried a merged command."""

    def __init__(self, merged_answers: list[Decision] | None = None) -> None:
        self.carried: list[list[str]] = []
        self.merged_answers = list(merged_answers or [])

    def __call__(self, job: Job) -> Decision:
        self.carried.append(parts(job))
        if job.parts and self.merged_answers:
            return self.merged_answers.pop(0)
        fields = job.params["fields"]
        if fields.get("title") == "bad":
            job.attempts += 1
            return Failed(ErrorClass.VALIDATION, "CRM_FIELD_ERROR_VALUE_NOT_VALID", "bad title")
        return applied(job)


async def deliver_held(flow: MemoryFlow, commands: list[tuple[str, dict[str, Any]]]) -> None:
    """Deliver while the limiter holds calls back, then let them go."""
    flow.limiter.open.clear()
    for message_id, command in commands:
        await flow.deliver(command, message_id=message_id)
    flow.limiter.open.set()


def by_id(flow: MemoryFlow, queue: str = "results") -> dict[str, dict[str, Any]]:
    return {event["messageId"]: event for event in flow.events(queue)}


async def test_an_items_waiting_commands_go_as_one_call_each_with_its_own_event() -> None:
    portal = Portal()
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(
            flow,
            [
                ("m0", deal(1, "v0", comments="first")),
                ("m1", deal(1, "v1")),
                ("o", deal(2, "other")),
                ("m2", {"entityTypeId": 2, "id": 1, "fields": {"opportunity": 5}}),
            ],
        )
        await flow.until_settled(4)
    assert flow.caller.calls == [["m0", "o"]]
    assert portal.carried == [["m0", "m1", "m2"], ["o"]]
    events = by_id(flow)
    # Each message its own event, in the item's order, naming the others applied with it.
    assert [e["messageId"] for e in flow.events("results") if e["id"] == 1] == ["m0", "m1", "m2"]
    assert events["m0"]["coalescedWith"] == ["m1", "m2"]
    assert events["m1"]["coalescedWith"] == ["m0", "m2"]
    assert events["o"]["coalescedWith"] == []
    # m0's title was overwritten by m1: superseded, not notApplied.
    assert events["m0"]["superseded"] == ["title"]
    assert events["m1"]["superseded"] == events["m2"]["superseded"] == []
    assert events["m0"]["item"] == {"id": 1, "title": "v1", "comments": "first", "opportunity": 5}
    assert [events[m]["attempts"] for m in ("m0", "m1", "m2")] == [1, 1, 1]
    assert sorted(flow.channel.acked) == [1, 2, 3, 4]


async def test_off_sends_each_command_of_an_item_in_a_call_of_its_own() -> None:
    portal = Portal()
    flow = MemoryFlow(portal)
    async with flow.running():
        await deliver_held(flow, [(f"m{n}", deal(1, f"v{n}")) for n in range(3)])
        await flow.until_settled(3)
    assert portal.carried == [["m0"], ["m1"], ["m2"]]
    assert all(event["coalescedWith"] == [] for event in flow.events("results"))


def moves(stage: str | None = None, category: int | None = None, **fields: Any) -> dict[str, Any]:
    if stage is not None:
        fields["stageId"] = stage
    if category is not None:
        fields["categoryId"] = category
    return {"entityTypeId": 2, "id": 1, "fields": fields}


async def test_stage_moves_to_different_values_are_never_merged() -> None:
    portal = Portal()
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(
            flow,
            [
                ("a", moves("NEW", title="a")),
                ("b", moves(title="b")),  # no move: rides with a
                ("c", moves("WON")),  # another stage: a call of its own
                ("d", moves("WON", comments="d")),  # the same stage: rides with c
                ("e", moves("C9:NEW", category=9)),  # a category move too: alone
                ("f", moves(category=9)),  # the category without the stage: alone
                ("g", moves("C9:NEW", category=9)),  # another move than f's: alone
            ],
        )
        await flow.until_settled(7)
    assert portal.carried == [["a", "b"], ["c", "d"], ["e"], ["f"], ["g"]]


async def test_fm_values_files_and_another_flag_go_alone() -> None:
    phone = {"n0": {"typeId": "PHONE", "valueType": "WORK", "value": "+1-555-0100"}}
    portal = Portal()
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(
            flow,
            [
                ("a", moves(title="a")),
                ("fm", moves(fm=phone)),
                ("b", moves(title="b")),
                ("file", moves(title="f", ufCrmFile={"id": 7})),
                ("c", moves(title="c")),
                ("uf", {**moves(title="u"), "useOriginalUfNames": "Y"}),
                ("d", moves(title="d")),
            ],
        )
        await flow.until_settled(7)
    assert portal.carried == [["a"], ["fm"], ["b"], ["file"], ["c"], ["uf"], ["d"]]


async def test_a_rejected_merged_call_is_split_and_each_command_sent_alone() -> None:
    refused = Failed(ErrorClass.ACCESS_DENIED, "ACCESS_DENIED", "refused")
    portal = Portal(merged_answers=[refused])
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(
            flow,
            [
                ("m0", deal(1, "v0")),
                ("m1", {"entityTypeId": 2, "id": 1, "fields": {"comments": "x"}}),
                ("m2", deal(1, "v2")),
            ],
        )
        await flow.until_settled(3)
    # The merged call fails as a whole (a scripted answer); each then goes alone.
    assert portal.carried == [["m0", "m1", "m2"], ["m0"], ["m1"], ["m2"]]
    assert [e["messageId"] for e in flow.events("results")] == ["m0", "m1", "m2"]
    assert flow.events("dead") == []


async def test_one_bad_command_fails_alone_and_its_neighbours_succeed() -> None:
    # The portal refuses any call carrying the title "bad": the merged one, then that one.
    portal = Portal()
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(
            flow,
            [
                ("m0", deal(1, "v0", comments="c0")),
                ("bad", deal(1, "bad")),
                ("m2", {"entityTypeId": 2, "id": 1, "fields": {"opportunity": 3}}),
                ("m3", {"entityTypeId": 2, "id": 1, "fields": {"comments": "c3"}}),
            ],
        )
        await flow.until_settled(4)
    assert portal.carried == [["m0", "bad", "m2", "m3"], ["m0"], ["bad"], ["m2"], ["m3"]]
    assert [e["messageId"] for e in flow.events("results")] == ["m0", "m2", "m3"]
    assert all(e["coalescedWith"] == [] for e in flow.events("results"))
    [failure] = flow.events("dead")
    assert (failure["messageId"], failure["error"]["class"]) == ("bad", "validation")
    assert failure["attempts"] == 1  # the merged call is not one of its attempts


async def test_a_value_a_later_command_overwrote_never_reaches_the_portal() -> None:
    # "bad" is superseded by m1's title within the call: the merged call carries "v1".
    portal = Portal()
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(flow, [("bad", deal(1, "bad")), ("m1", deal(1, "v1"))])
        await flow.until_settled(2)
    assert portal.carried == [["bad", "m1"]]
    events = by_id(flow)
    assert events["bad"]["superseded"] == ["title"]
    assert events["bad"]["notApplied"] == []
    assert flow.events("dead") == []


async def test_a_transient_answer_to_a_merged_call_splits_it_too() -> None:
    portal = Portal(merged_answers=[Retry("INTERNAL_SERVER_ERROR")])
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(flow, [(f"m{n}", deal(1, f"v{n}")) for n in range(3)])
        await flow.until_settled(3)
    assert portal.carried == [["m0", "m1", "m2"], ["m0"], ["m1"], ["m2"]]
    assert [end for _, end in flow.observer.ends] == [Settled.SUCCEEDED] * 3


async def test_a_rate_limited_merged_call_goes_again_merged() -> None:
    portal = Portal(merged_answers=[Again("QUERY_LIMIT_EXCEEDED")])
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(flow, [(f"m{n}", deal(1, f"v{n}")) for n in range(3)])
        await flow.until_settled(3)
    assert portal.carried == [["m0", "m1", "m2"], ["m0", "m1", "m2"]]
    assert [e["attempts"] for e in flow.events("results")] == [1, 1, 1]


async def test_a_portal_down_during_a_merged_call_keeps_the_commands_in_order() -> None:
    portal = Portal(merged_answers=[PortalDown("blocked", "OVERLOAD_LIMIT")])
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        await deliver_held(flow, [(f"m{n}", deal(1, f"v{n}")) for n in range(3)])
        await flow.until_settled(3)
    assert flow.observer.down == [("blocked", "OVERLOAD_LIMIT")]
    assert portal.carried == [["m0", "m1", "m2"], ["m0", "m1", "m2"]]
    assert flow.titles() == ["v2", "v2", "v2"]
    assert [e["messageId"] for e in flow.events("results")] == ["m0", "m1", "m2"]


async def test_a_retry_copy_goes_alone() -> None:
    portal = Portal()
    flow = MemoryFlow(portal, coalesce=True)
    async with flow.running():
        flow.limiter.open.clear()
        await flow.deliver(deal(1, "r"), message_id="r", source="retry")
        await flow.deliver(deal(1, "m"), message_id="m")
        flow.limiter.open.set()
        await flow.until_settled(2)
    assert portal.carried == [["r"], ["m"]]


async def test_not_applied_is_reported_to_the_command_whose_value_was_sent() -> None:
    def reverts_stage(job: Job) -> Decision:
        job.attempts += 1
        fields = job.params["fields"]
        return Succeeded(item={"id": 1, **fields, "stageId": "NEW"}, not_applied=("stageId",))

    flow = MemoryFlow(reverts_stage, coalesce=True)
    async with flow.running():
        await deliver_held(
            flow, [("a", moves("WON", title="a")), ("b", moves(title="b")), ("c", moves("WON"))]
        )
        await flow.until_settled(3)
    events = by_id(flow)
    assert [events[m]["notApplied"] for m in ("a", "b", "c")] == [["stageId"], [], ["stageId"]]
    assert [events[m]["superseded"] for m in ("a", "b", "c")] == [["title"], [], []]
