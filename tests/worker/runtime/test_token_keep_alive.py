"""A lane keeps an idle OAuth portal's refresh token alive, and says when it cannot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.worker.bitrix.oauthfake import MemoryStore, OAuthPortal
from worker.observability.metrics import Metrics
from worker.runtime import lanes
from worker.runtime.lanes import Lane
from worker.settings import Settings


class IdlePipeline:
    async def run(self) -> None:
        await asyncio.Event().wait()


def oauth_lane(portal: OAuthPortal, metrics: Metrics) -> Lane:
    _, auth = portal.auth(MemoryStore())
    settings = Settings(B24_WEBHOOK_URL="https://p.example.com/rest/1/c0de99/")
    key = next(iter(settings.portals().values()))
    return Lane(
        key,
        IdlePipeline(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        auth=auth,
        metrics=metrics,
        token_max_age_s=14 * 86_400.0,
    )


@pytest.fixture(autouse=True)
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "TOKEN_FIRST_CHECK_WITHIN_S", 0.0)
    monkeypatch.setattr(lanes, "TOKEN_CHECK_EVERY_S", 0.01)


async def running(lane: Lane, until: Any) -> None:
    task = asyncio.create_task(lane.run())
    try:
        for _ in range(500):
            if until():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not met in time")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_idle_oauth_portal_has_its_token_renewed() -> None:
    portal, metrics = OAuthPortal(), Metrics()
    lane = oauth_lane(portal, metrics)
    await running(lane, lambda: len(portal.refresh_forms) >= 1)
    await asyncio.sleep(0.05)  # more checks: the token is young now, nothing more is sent
    assert len(portal.refresh_forms) == 1
    assert metrics.total("b24_token_renewal_failed", portal="default") == 0


async def test_a_renewal_that_fails_is_a_metric_per_portal() -> None:
    portal, metrics = OAuthPortal(token_endpoint_down=True), Metrics()
    lane = oauth_lane(portal, metrics)
    await running(lane, lambda: metrics.total("b24_token_renewal_failed", portal="default") == 1)
    metrics.forget_portal("default")  # a dropped lane takes its series along
    assert "b24_token_renewal_failed{" not in metrics_text(metrics)


def metrics_text(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()
