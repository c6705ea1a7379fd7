"""An idle OAuth portal's refresh token is kept alive, lane or not, and a failure says so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from tests.worker.bitrix.oauthfake import MemoryStore, OAuthPortal
from worker.observability.metrics import Metrics
from worker.runtime import lanes
from worker.runtime.lanes import keep_token_alive


@pytest.fixture(autouse=True)
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "TOKEN_FIRST_CHECK_WITHIN_S", 0.0)
    monkeypatch.setattr(lanes, "TOKEN_CHECK_EVERY_S", 0.01)


async def running(keeping: Awaitable[None], until: Any) -> None:
    task = asyncio.ensure_future(keeping)
    try:
        for _ in range(500):
            if until():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not met in time")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def keeping(portal: OAuthPortal, metrics: Metrics) -> Awaitable[None]:
    _, auth = portal.auth(MemoryStore())
    return keep_token_alive("default", auth, max_age_s=14 * 86_400.0, metrics=metrics)


async def test_an_idle_oauth_portal_has_its_token_renewed_once() -> None:
    portal, metrics = OAuthPortal(), Metrics()
    task = asyncio.ensure_future(keeping(portal, metrics))
    try:
        for _ in range(500):
            if portal.refresh_forms:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # more checks: the token is young now, nothing more is sent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(portal.refresh_forms) == 1
    assert metrics.total("b24_token_renewal_failed", portal="default") == 0


async def test_a_renewal_that_fails_is_a_metric_per_portal() -> None:
    portal, metrics = OAuthPortal(token_endpoint_down=True), Metrics()
    await running(
        keeping(portal, metrics),
        lambda: metrics.total("b24_token_renewal_failed", portal="default") == 1,
    )
    metrics.forget_lane("default")  # an idle lane dropped: the token's series stays
    assert 'b24_token_renewal_failed{portal="default"} 1.0' in metrics_text(metrics)
    metrics.forget_portal("default")  # a portal served no more takes its series along
    assert "b24_token_renewal_failed{" not in metrics_text(metrics)


def metrics_text(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()
