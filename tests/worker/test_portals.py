"""Several portals from one worker: the x-b24-portal header chooses, configuration supplies.

Two sandbox portals run side by side; each command must reach the portal its
header names and no other, and a message naming no configured portal must end
as a validation failure without any call.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.testing import RunningSandbox
from schemas.wire import PORTAL_HEADER
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import control, events, running_worker, settings_for, stored
from worker.settings import Settings

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]


def two_portals(amqp_url: str, north: RunningSandbox, south: RunningSandbox) -> Settings:
    """``north`` as the portal of B24_WEBHOOK_URL (the default), ``south`` in B24_PORTALS."""
    return settings_for(
        amqp_url,
        north,
        B24_PORTAL_KEY="north",
        B24_DEFAULT_PORTAL="north",
        B24_PORTALS={"south": {"webhook_url": south.webhook_url, "rate_burst": 10}},
    )


def deal(item_id: int, title: str) -> dict[str, Any]:
    return {"entityTypeId": 2, "id": item_id, "fields": {"title": title}}


def requests_to(portal: RunningSandbox) -> int:
    counters: dict[str, Any] = control(portal, "GET", "counters")
    return int(counters["requests"])


async def test_each_command_reaches_the_portal_its_header_names(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    settings = two_portals(amqp_url, north, south)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        queue = settings.UPDATE_QUEUE
        await publish(broker, queue, deal(1, "to south"), headers={PORTAL_HEADER: "south"})
        await publish(broker, queue, deal(2, "to north"), headers={PORTAL_HEADER: "north"})
        await publish(broker, queue, deal(3, "no header"))
        done = events(await take(broker, settings.RESULT_QUEUE, 3))
    assert sorted(event["id"] for event in done) == [1, 2, 3]
    assert stored(south, 2, 1)["title"] == "to south"
    assert stored(north, 2, 1)["title"] != "to south"
    assert stored(north, 2, 2)["title"] == "to north"
    assert stored(south, 2, 2)["title"] != "to north"
    assert stored(north, 2, 3)["title"] == "no header"
    assert stored(south, 2, 3)["title"] != "no header"


async def test_an_unknown_portal_is_a_validation_failure_and_nothing_is_called(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    settings = two_portals(amqp_url, north, south)
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        before = requests_to(north) + requests_to(south)
        await publish(
            broker,
            settings.UPDATE_QUEUE,
            deal(1, "nowhere"),
            headers={PORTAL_HEADER: "west"},
            message_id="m-west",
        )
        [event] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1))
        after = requests_to(north) + requests_to(south)
    assert event["messageId"] == "m-west"
    assert event["portal"] is None  # a portal the worker does not serve
    assert (event["error"]["class"], event["error"]["code"]) == ("validation", "VALIDATION")
    assert "'west' is not a configured portal" in event["error"]["description"]
    assert "north, south" in event["error"]["description"]
    assert (event["entityTypeId"], event["id"]) == (2, 1)
    assert after == before
    assert stored(north, 2, 1)["title"] != "nowhere"
    assert stored(south, 2, 1)["title"] != "nowhere"


async def test_without_a_default_portal_a_message_must_name_one(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox
) -> None:
    settings = settings_for(
        amqp_url,
        north,
        B24_WEBHOOK_URL=None,
        B24_PORTALS={"north": {"webhook_url": north.webhook_url}},
        B24_DEFAULT_PORTAL="nobody",
    )
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        await publish(broker, settings.UPDATE_QUEUE, deal(1, "unnamed"))
        await publish(
            broker, settings.UPDATE_QUEUE, deal(2, "named"), headers={PORTAL_HEADER: "north"}
        )
        [failed] = events(await take(broker, settings.DEAD_LETTER_QUEUE, 1))
        [applied] = events(await take(broker, settings.RESULT_QUEUE, 1))
    assert f"no {PORTAL_HEADER} header" in failed["error"]["description"]
    assert "'nobody'" in failed["error"]["description"]
    assert applied["id"] == 2
    assert stored(north, 2, 2)["title"] == "named"


def test_every_portals_secrets_are_masked() -> None:
    settings = Settings(
        B24_WEBHOOK_URL="https://north.example.com/rest/1/northcode123/",
        B24_PORTALS={
            "south": {"webhook_url": "https://south.example.com/rest/7/southcode456/"},
            "east": {
                "portal_url": "https://east.example.com",
                "client_id": "app.1",
                "client_secret": "eastsecret789",
                "refresh_token": "eastrefresh000",
            },
        },
    )
    assert {"northcode123", "southcode456", "eastsecret789", "eastrefresh000"} <= set(
        settings.secrets()
    )
    shown = json.dumps(settings.describe())
    for secret in ("northcode123", "southcode456", "eastsecret789", "eastrefresh000"):
        assert secret not in shown
