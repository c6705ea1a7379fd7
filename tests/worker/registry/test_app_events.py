"""The application's install and uninstall events, end to end: the sandbox portal
installs the application, the worker registers and serves it by its member_id;
forged events change nothing; the real uninstall ends its commands as portal_gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from sandbox.testing import RunningSandbox
from schemas.wire import PORTAL_HEADER
from tests.reliability.processes import free_port
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import events, eventually, running_worker, stored
from tests.worker.registry.test_worker_registry import registry_settings
from worker.registry import Registry, Sealer, SqliteStore, new_key

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]


async def sandbox_control(portal: RunningSandbox, path: str, body: dict[str, Any]) -> Any:
    """The sandbox sends the event to the worker's handler, served by this test's loop."""
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(f"{portal.control_url}/{path}", json=body)
    answer.raise_for_status()
    return answer.json()


async def post_form(url: str, form: dict[str, str]) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.post(url, data=form)).status_code


async def test_installed_served_forgeries_refused_uninstalled_gone(
    amqp_url: str, north: RunningSandbox, south: RunningSandbox, tmp_path: Path
) -> None:
    key, port, path = new_key(), free_port(), tmp_path / "portals.sqlite3"
    app = south.state.config  # the sandbox's application credentials
    settings = registry_settings(
        amqp_url,
        north,
        path,
        key,
        INSTALL_PORT=port,
        B24_APP_CLIENT_ID=app.client_id,
        B24_APP_CLIENT_SECRET=app.client_secret,
        B24_OAUTH_TOKEN_URL=south.token_url,
        B24_TOKEN_FILE=str(tmp_path / "token.json"),  # the installed portal's beside it
    )
    handler = f"http://127.0.0.1:{port}/b24/events"
    member = south.state.member_id
    registry = Registry(SqliteStore(path), Sealer(key))
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        try:
            installed = await sandbox_control(south, "app/install", {"handler": handler})
            assert installed == {"event": "ONAPPINSTALL", "member_id": member, "status": 200}
            await eventually(lambda: member in worker.lanes, 10)
            command = {"entityTypeId": 2, "id": 3, "fields": {"title": "installed"}}
            await publish(broker, settings.UPDATE_QUEUE, command, headers={PORTAL_HEADER: member})
            done = events(await take(broker, settings.RESULT_QUEUE, 1, timeout_s=10))
            assert [(e["status"], e["portal"]) for e in done] == [("succeeded", member)]
            assert stored(south, 2, 3)["title"] == "installed"
            token_file = tmp_path / f"token.{member}.json"  # its refreshed token, kept
            assert token_file.exists()
            token = await registry.application_token(member)

            # A forged uninstall and a forged reinstall: refused, nothing changed.
            forged = {"handler": handler, "application_token": "forged"}
            assert (await sandbox_control(south, "app/uninstall", forged))["status"] == 403
            reinstall = {
                "event": "ONAPPINSTALL",
                "auth[member_id]": member,
                "auth[application_token]": "forged",
                "auth[refresh_token]": "whatever",
            }
            assert await post_form(handler, reinstall) == 403
            # An install the OAuth server does not confirm: nothing registered.
            stranger = {**reinstall, "auth[member_id]": "0123456789abcdef0123456789abcdef"}
            assert await post_form(handler, stranger) == 403
            assert await registry.application_token(member) == token
            assert [entry.key for entry in await registry.entries()] == [member]
            assert member in worker.lanes

            # Two commands wait in the portal's queue (its consumption held back).
            await worker.consumers.hold(member)
            exchange = await (await broker.channel()).get_exchange(settings.UPDATE_QUEUE)
            for n in (6, 7):
                queued = {"entityTypeId": 2, "id": n, "fields": {"title": "queued"}}
                message = aio_pika.Message(
                    json.dumps(queued).encode(), headers={PORTAL_HEADER: member}
                )
                await exchange.publish(message, routing_key="")

            # The real uninstall: the portal is gone, its commands end as portal_gone,
            # those queued before it and those sent after.
            uninstall = {"handler": handler, "clean": True}
            uninstalled = await sandbox_control(south, "app/uninstall", uninstall)
            assert uninstalled["status"] == 200
            await eventually(lambda: member not in worker.lanes, 10)
            for n in (4, 5):
                late = {"entityTypeId": 2, "id": n, "fields": {"title": "after uninstall"}}
                await publish(broker, settings.UPDATE_QUEUE, late, headers={PORTAL_HEADER: member})
            failed = events(await take(broker, settings.DEAD_LETTER_QUEUE, 4, timeout_s=10))
            extra = await take(broker, settings.DEAD_LETTER_QUEUE, 1, timeout_s=1)
            successes = await take(broker, settings.RESULT_QUEUE, 1, timeout_s=0.5)
        finally:
            channel = await broker.channel()
            await channel.queue_delete(worker.topology.portal_queue(member))
    assert sorted(event["id"] for event in failed) == [4, 5, 6, 7]  # one outcome each
    assert extra == []
    assert not token_file.exists()  # data[CLEAN]=1: its stored token removed too
    assert successes == []
    assert {event["error"]["class"] for event in failed} == {"portal_gone"}
    assert stored(south, 2, 4)["title"] != "after uninstall"
