"""`Lanes`: a portal's lane is built at its first command and dropped once idle."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.worker.bitrix.oauthfake import CLIENT_ID, CLIENT_SECRET, FIRST_REFRESH, PORTAL_URL
from worker.bitrix import Auth, WebhookAuth
from worker.observability.metrics import Metrics
from worker.runtime import lanes as lanes_module
from worker.runtime.lanes import Lane, Lanes
from worker.settings import Portal, Settings


class FakePipeline:
    """A pipeline whose business the test sets: idle since ``idle``, or busy (None)."""

    def __init__(self) -> None:
        self.idle: float | None = time.monotonic()
        self.closed = False

    def idle_since(self) -> float | None:
        return self.idle

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


class FakeDefinitions:
    async def close(self) -> None:
        pass


def portal(key: str, **config: Any) -> Portal:
    settings = Settings(B24_WEBHOOK_URL=f"https://{key}.example.com/rest/1/c0de99/")
    return settings.portal(key, settings.B24_PORTALS.get(key) or _config(key, **config))


def _config(key: str, **config: Any) -> Any:
    from worker.settings import PortalConfig

    return PortalConfig(webhook_url=f"https://{key}.example.com/rest/1/c0de99/", **config)


class Built:
    """The lanes a `Lanes` built, and the auths it asked for."""

    def __init__(self) -> None:
        self.lanes: list[Lane] = []
        self.auths: list[str] = []

    def lane(self, portal: Portal, auth: Auth) -> Lane:
        lane = Lane(portal, FakePipeline(), FakeDefinitions(), httpx.AsyncClient())  # type: ignore[arg-type]
        lane.auth_given = auth  # type: ignore[attr-defined]
        self.lanes.append(lane)
        return lane

    def auth(self, portal: Portal) -> Auth:
        if portal.key == "west":
            raise ValueError("no usable credentials")
        self.auths.append(portal.key)
        assert portal.webhook_url is not None
        return WebhookAuth(portal.webhook_url.get_secret_value())


def lanes_of(built: Built, *, idle_s: float, shared: bool = True) -> tuple[Lanes, Metrics]:
    metrics = Metrics()
    lanes = Lanes(
        built.lane,
        built.auth,
        metrics=metrics,
        idle_s=idle_s,
        shared_limiter=shared,
        token_max_age_s=14 * 86_400.0,
    )
    return lanes, metrics


async def test_a_lane_is_built_at_the_first_look_and_not_before() -> None:
    built = Built()
    lanes, _ = lanes_of(built, idle_s=60)
    for key in ("north", "south"):
        lanes.serve(key, portal(key))
    # Knowing the portals served builds nothing.
    assert "north" in lanes
    assert "west" not in lanes
    assert sorted(lanes) == ["north", "south"]
    assert len(lanes) == 2
    assert "north" in lanes.pipelines
    assert len(lanes.pipelines) == 2
    assert built.lanes == []
    assert lanes.built == {}
    assert built.auths == ["north", "south"]  # built when served: bad ones fail there
    # The router's look builds the lane, once.
    pipeline = lanes.pipelines.get("north")
    assert pipeline is lanes["north"].pipeline
    assert [lane.portal.key for lane in built.lanes] == ["north"]
    assert list(lanes.built) == ["north"]
    assert lanes.pipelines.get("west") is None  # not served: nothing built
    with pytest.raises(KeyError):
        lanes["west"]
    # Credentials that cannot be used stop the serving, not a command later.
    with pytest.raises(ValueError, match="no usable credentials"):
        lanes.serve("west", portal("west"))
    assert "west" not in lanes
    await lanes.close()


async def test_an_idle_lane_is_dropped_with_its_series_and_built_anew() -> None:
    built = Built()
    lanes, metrics = lanes_of(built, idle_s=60)
    lanes.serve("north", portal("north"))
    lanes.serve("south", portal("south"))
    north, south = lanes["north"], lanes["south"]
    south.pipeline.idle = None  # type: ignore[attr-defined]  # busy: holds commands
    for key in ("north", "south"):
        metrics.consumed.labels("work", key).inc()
        metrics.queue_ready.labels(f"q.{key}", key).set(3)
    north.pipeline.idle = time.monotonic() - 50  # type: ignore[attr-defined]
    assert await lanes.drop_idle() == []  # not idle long enough yet
    north.pipeline.idle = time.monotonic() - 61  # type: ignore[attr-defined]
    assert await lanes.drop_idle() == ["north"]
    assert list(lanes.built) == ["south"]
    assert "north" in lanes
    assert north.pipeline.closed  # type: ignore[attr-defined]
    assert north.http.is_closed
    assert not south.http.is_closed
    assert metrics.total("b24_consumed_total", portal="north") == 0
    assert metrics.total("b24_consumed_total", portal="south") == 1
    assert metrics.total("b24_queue_ready", portal="north") == 3  # its queue's: kept
    # Its next command builds a new lane, with the portal's same auth.
    again = lanes["north"]
    assert again is not north
    assert len(built.lanes) == 3
    assert again.auth_given is north.auth_given  # type: ignore[attr-defined]
    assert built.auths == ["north", "south"]
    await lanes.close()
    assert again.http.is_closed
    assert south.http.is_closed


async def test_a_lane_is_kept_while_the_portal_remembers_its_calls() -> None:
    built = Built()
    lanes, _ = lanes_of(built, idle_s=1, shared=False)
    window = portal("north", operating_window_s=300, rate_per_second=2, rate_burst=50)
    slow = portal("slow", operating_window_s=10, rate_per_second=0.1, rate_burst=20)
    assert lanes.idle_for(window) == 300  # its operating window
    assert lanes.idle_for(slow) == 200  # its bucket drains in 20 / 0.1 s
    shared, _ = lanes_of(built, idle_s=1, shared=True)
    assert shared.idle_for(window) == 1  # the limiter's state is in Redis: nothing lost
    never, _ = lanes_of(built, idle_s=0, shared=False)
    assert never.idle_for(window) == 0
    never.serve("north", window)
    never["north"].pipeline.idle = 0.0  # type: ignore[attr-defined]  # idle for ever
    assert await never.drop_idle() == []
    await never.close()


async def test_a_forgotten_portal_takes_its_lane_and_every_series_along() -> None:
    built = Built()
    lanes, metrics = lanes_of(built, idle_s=60)
    lanes.serve("north", portal("north"))
    lane = lanes["north"]
    metrics.queue_ready.labels("q.north", "north").set(3)
    await lanes.forget("north")
    assert "north" not in lanes
    assert lanes.built == {}
    assert lane.http.is_closed
    assert metrics.total("b24_queue_ready", portal="north") == 0


async def test_an_oauth_portal_without_a_lane_has_its_token_kept_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.worker.bitrix.oauthfake import MemoryStore, OAuthPortal

    monkeypatch.setattr(lanes_module, "TOKEN_FIRST_CHECK_WITHIN_S", 0.0)
    oauth = OAuthPortal()
    made: list[str] = []

    def auth(portal: Portal) -> Auth:
        made.append(portal.key)
        return oauth.auth(MemoryStore())[1]

    lanes = Lanes(
        Built().lane,
        auth,
        metrics=Metrics(),
        idle_s=60,
        shared_limiter=True,
        token_max_age_s=14 * 86_400.0,
    )
    settings = Settings(
        B24_PORTAL_URL=PORTAL_URL,
        B24_CLIENT_ID=CLIENT_ID,
        B24_CLIENT_SECRET=CLIENT_SECRET,
        B24_REFRESH_TOKEN=FIRST_REFRESH,
    )
    lanes.serve("default", next(iter(settings.portals().values())))
    for _ in range(500):
        if oauth.refresh_forms:
            break
        await asyncio.sleep(0.01)
    assert len(oauth.refresh_forms) == 1  # renewed, with no lane built
    assert lanes.built == {}
    assert made == ["default"]
    await lanes.close()
