"""The router in memory: each delivery to its portal's pipeline; the rest end at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schemas.wire import DELIVERY_COUNT_HEADER, PORTAL_HEADER
from tests.worker.flow.memory import TOPOLOGY, MemoryFlow, RecordingObserver, deal
from tests.worker.flow.test_pipeline import applied
from worker.flow.outcomes import Outcomes, Settled
from worker.flow.pipeline import Pipeline
from worker.flow.routing import Router


def router_for(
    flow: MemoryFlow,
    observer: RecordingObserver,
    *,
    pipelines: dict[str, Pipeline] | None = None,
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> Router:
    return Router(
        pipelines={"acme": flow.pipeline} if pipelines is None else pipelines,
        default_portal="acme",
        outcomes=Outcomes(
            publisher=flow.publisher,
            acks=flow.acks,
            topology=TOPOLOGY,
            max_attempts=5,
            observer=observer,
        ),
        observer=observer,
        refresh=refresh,
    )


async def test_the_header_or_the_default_portal_picks_the_pipeline() -> None:
    flow, ended = MemoryFlow(applied), RecordingObserver()
    router = router_for(flow, ended)
    async with flow.running():
        await router.accept(
            flow.delivery(deal(1, "named"), headers={PORTAL_HEADER: "acme"}), "update"
        )
        await router.accept(flow.delivery(deal(2, "default")), "update")
        await flow.until_settled(2)
    assert sorted(flow.titles()) == ["default", "named"]
    assert ended.ends == []


async def test_an_unknown_portal_is_a_validation_failure_and_nothing_is_called() -> None:
    flow, ended = MemoryFlow(applied), RecordingObserver()
    router = router_for(flow, ended)
    async with flow.running():
        delivery = flow.delivery(deal(5, "x"), message_id="m", headers={PORTAL_HEADER: "nope"})
        await router.accept(delivery, "update")
        await flow.acks.flush()
    [event] = flow.events("dead")
    assert event["error"]["class"] == "validation"
    assert "'nope' is not a configured portal (configured: acme)" in event["error"]["description"]
    assert (event["entityTypeId"], event["id"]) == (2, 5)  # the item is still named
    assert flow.caller.calls == []
    assert ended.ends == [("m", Settled.FAILED)]
    assert flow.channel.acked == [1]


async def test_a_poisoned_message_is_reported_whatever_it_holds() -> None:
    flow, ended = MemoryFlow(applied), RecordingObserver()
    router = router_for(flow, ended)
    async with flow.running():
        poisoned = flow.delivery(b"\xff not even utf-8", headers={DELIVERY_COUNT_HEADER: 51})
        await router.accept(poisoned, "poison")
        await flow.acks.flush()
    [event] = flow.events("dead")
    assert event["error"]["code"] == "DELIVERY_LIMIT"
    assert "51 times" in event["error"]["description"]
    assert flow.caller.calls == []
    assert ended.sources == ["poison"]


async def test_an_unknown_portal_is_looked_up_again_before_it_fails() -> None:
    """A command sent right after its portal was registered, before this worker read
    the registry: the router reads it again, and the command goes to the new lane."""
    flow, ended = MemoryFlow(applied), RecordingObserver()
    pipelines: dict[str, Pipeline] = {}
    lookups = []

    async def refresh() -> None:
        lookups.append(len(pipelines))
        pipelines["acme"] = flow.pipeline

    router = router_for(flow, ended, pipelines=pipelines, refresh=refresh)
    async with flow.running():
        await router.accept(flow.delivery(deal(1, "just registered")), "update")
        await flow.until_settled(1)
        await router.accept(flow.delivery(deal(2, "known by now")), "update")
        await flow.until_settled(2)
    assert sorted(flow.titles()) == ["just registered", "known by now"]
    assert lookups == [0]  # looked up once, while the portal was unknown
    assert flow.events("dead") == []


async def test_a_registry_that_cannot_be_read_leaves_the_portals_known_so_far() -> None:
    flow, ended = MemoryFlow(applied), RecordingObserver()

    async def refresh() -> None:
        raise OSError("connection refused")

    router = router_for(flow, ended, refresh=refresh)
    async with flow.running():
        await router.accept(flow.delivery(deal(5, "x"), headers={PORTAL_HEADER: "nope"}), "update")
        await router.accept(flow.delivery(deal(6, "y")), "update")
        await flow.until_settled(1)
        await flow.acks.flush()
    [event] = flow.events("dead")
    assert "'nope' is not a configured portal" in event["error"]["description"]
    assert flow.titles() == ["y"]
