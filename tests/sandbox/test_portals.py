"""Several portals from one process: each on its own port, with nothing of its own shared."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.cli import add_arguments, announce_portals, config_from_args
from sandbox.clock import ManualClock
from sandbox.config import SandboxConfig
from sandbox.portals import check_ports, open_portals, portals_file
from sandbox.testing import RunningSandbox, running_sandboxes, serve_many_in_thread
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox

GET = {"entityTypeId": 2, "id": 1}
WEBHOOK = re.compile(r"^http://127\.0\.0\.1:[0-9]+/rest/[0-9]+/[^/]+/$")


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def three(clock: ManualClock) -> Iterator[list[RunningSandbox]]:
    # Both limits on, small: a burst of 3, and 1 s of operating time of which an update
    # takes 0.6 s (a get, under the 0.1 s floor, nothing); time moves only when told to.
    config = SandboxConfig(
        seed_items=2,
        rate_burst=3,
        operating_limit_s=1.0,
        operating_cost_s=0.05,
        operating_costs=(("crm.item.update", 0.6),),
    )
    with serve_many_in_thread(config, 3, clock=clock) as portals:
        yield portals


@pytest.fixture
def b24(three: list[RunningSandbox]) -> Iterator[list[SandboxClient]]:
    """A client of each of the three portals, each portal freshly reset."""
    clients = [SandboxClient(portal) for portal in three]
    for client in clients:
        client.reset()
    yield clients
    for client in clients:
        client.close()


def test_each_portal_answers_on_its_own_port(three: list[RunningSandbox]) -> None:
    assert [p.key for p in three] == ["portal1", "portal2", "portal3"]
    assert len({p.port for p in three}) == 3
    for portal in three:
        assert portal.base_url == f"http://127.0.0.1:{portal.port}"
        assert portal.webhook_url == f"{portal.base_url}/rest/1/sandboxwebhook01/"
        assert portal.control_url == f"{portal.base_url}/_sandbox"
        assert portal.state.config.port == portal.port
    assert len({id(p.state) for p in three}) == 3


def test_a_write_to_one_portal_is_not_seen_on_another(b24: list[SandboxClient]) -> None:
    first, second, _ = b24
    first.ok("crm.item.update", {**GET, "fields": {"title": "Changed on portal 1"}})
    added = first.ok("crm.item.add", {"entityTypeId": 2, "fields": {"title": "New"}})
    assert first.item(2, 1)["title"] == "Changed on portal 1"
    assert second.item(2, 1)["title"] == "Deal #1"
    assert second.ok("crm.item.get", GET)["item"]["title"] == "Deal #1"
    new_id = added["item"]["id"]
    assert second.call("crm.item.get", {"entityTypeId": 2, "id": new_id}).status_code == 400
    # The same ids are free on each portal: the second's next deal takes the id too.
    assert second.ok("crm.item.add", {"entityTypeId": 2, "fields": {}})["item"]["id"] == new_id


def test_counters_are_per_portal(b24: list[SandboxClient]) -> None:
    first, second, third = b24
    first.ok("crm.item.get", GET)
    first.ok("crm.item.get", GET)
    second.ok("crm.item.get", GET)
    assert [c.counters()["requests"] for c in b24] == [2, 1, 0]
    assert first.counters()["calls"] == {"crm.item.get": 2}
    assert third.counters()["calls"] == {}
    assert [c.portal.state.counters.requests for c in b24] == [2, 1, 0]


def test_a_blocked_portal_leaves_the_others_answering(b24: list[SandboxClient]) -> None:
    first, second, third = b24
    assert second.faults(overload=True)["overload"] is True
    blocked = second.call("crm.item.get", GET)
    assert blocked.status_code == 503
    assert blocked.json()["error"] == "OVERLOAD_LIMIT"
    assert first.faults()["overload"] is False
    assert first.call("crm.item.get", GET).status_code == 200
    assert third.call("crm.item.get", GET).status_code == 200
    second.faults(overload=False)
    assert second.call("crm.item.get", GET).status_code == 200


def test_a_dropped_answer_on_one_portal_leaves_the_others_whole(
    b24: list[SandboxClient],
) -> None:
    first, second, _ = b24
    first.faults(disconnect_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        first.call("crm.item.get", GET)
    assert first.counters()["disconnects"] == 1
    assert second.call("crm.item.get", GET).status_code == 200
    assert second.counters()["disconnects"] == 0


def test_each_portal_has_its_own_request_bucket(b24: list[SandboxClient]) -> None:
    first, second, third = b24
    statuses = [first.call("crm.item.get", GET).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 503]  # burst 3, and the clock stands still
    assert first.counters()["query_limit_rejections"] == 1
    assert second.call("crm.item.get", GET).status_code == 200
    assert third.call("crm.item.get", GET).status_code == 200
    assert second.counters()["query_limit_rejections"] == 0


def test_each_portal_has_its_own_operating_time(
    b24: list[SandboxClient], clock: ManualClock
) -> None:
    first, second, _ = b24
    update = {**GET, "fields": {"title": "x"}}
    statuses = []
    for _ in range(3):
        statuses.append(first.call("crm.item.update", update).status_code)
        clock.advance(10)  # the bucket drains; the 600 s window keeps what was charged
    assert statuses == [200, 200, 429]  # 0.6 s an update: over 1 s after the second
    assert second.call("crm.item.update", update).status_code == 200
    assert second.counters()["operation_limit_rejections"] == 0


def test_a_reset_resets_only_its_own_portal(b24: list[SandboxClient]) -> None:
    first, second, _ = b24
    first.ok("crm.item.update", {**GET, "fields": {"title": "Kept"}})
    second.ok("crm.item.get", GET)
    second.reset()
    assert first.item(2, 1)["title"] == "Kept"
    assert first.counters()["requests"] == 1
    assert second.counters()["requests"] == 0


async def test_running_sandboxes_serves_async_clients_and_stops() -> None:
    async with running_sandboxes(SandboxConfig(seed_items=1, limits_enabled=False), 2) as pair:
        async with httpx.AsyncClient() as client:
            for portal in pair:
                response = await client.post(portal.webhook_url + "crm.item.get", json=GET)
                assert response.json()["result"]["item"]["title"] == "Deal #1"
        assert [p.state.counters.requests for p in pair] == [1, 1]
        urls = [p.base_url for p in pair]
    async with httpx.AsyncClient() as client:
        for url in urls:
            with pytest.raises(httpx.ConnectError):
                await client.get(url + "/_sandbox/")


def test_https_portals_share_one_certificate() -> None:
    config = SandboxConfig(seed_items=1, https=True, limits_enabled=False)
    with serve_many_in_thread(config, 2) as pair:
        assert pair[0].ca_file is not None
        assert pair[0].ca_file == pair[1].ca_file
        trust = ssl.create_default_context(cafile=pair[0].ca_file)
        with httpx.Client(verify=trust) as client:
            for portal in pair:
                assert portal.webhook_url.startswith("https://127.0.0.1:")
                response = client.post(portal.webhook_url + "crm.item.get", json=GET)
                assert response.status_code == 200


def test_the_portals_file_is_the_workers_portals_object(three: list[RunningSandbox]) -> None:
    body = json.loads(json.dumps(portals_file(three)))
    assert list(body) == ["portal1", "portal2", "portal3"]
    for key, portal in zip(body, three, strict=True):
        assert body[key] == {"webhook_url": portal.webhook_url}


def test_the_banner_has_a_line_per_portal_and_masks_a_chosen_code(
    three: list[RunningSandbox],
) -> None:
    out = io.StringIO()
    announce_portals(SandboxConfig(), three, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Bitrix24 sandbox: 3 independent portals on 127.0.0.1"
    for portal, line in zip(three, lines[1:4], strict=True):
        assert line == (
            f"  {portal.key}: {portal.base_url}  webhook URL: {portal.webhook_url}  "
            f"control: {portal.control_url}/"
        )
    assert lines[-1].endswith(", each portal its own")
    out = io.StringIO()
    announce_portals(SandboxConfig(webhook_code="s3cr3tc0de"), three, out, None, "p.json")
    assert "s3cr3tc0de" not in out.getvalue()
    assert out.getvalue().count("/rest/1/***/") == 3
    assert "  portals file: p.json\n" in out.getvalue()


def args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_portals_come_from_the_option_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (args([]).portals, args([]).portals_file) == (1, None)
    monkeypatch.setenv("SANDBOX_PORTALS", "200")
    monkeypatch.setenv("SANDBOX_PORTALS_FILE", "portals.json")
    assert (args([]).portals, args([]).portals_file) == (200, "portals.json")
    assert args(["--portals=3"]).portals == 3
    # Every portal starts from the one configuration the other options make.
    assert config_from_args(args(["--portals=3"])) == config_from_args(args([]))


def test_the_ports_must_fit() -> None:
    check_ports(8085, 200)
    check_ports(0, 200)
    with pytest.raises(ValueError, match="at least 1"):
        check_ports(8085, 0)
    with pytest.raises(ValueError, match="65536"):
        check_ports(65535, 2)


def _clean_env() -> dict[str, str]:
    # Without SANDBOX_* settings from outside: the options are the test's.
    return {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")} | {
        "PYTHONUNBUFFERED": "1"
    }


def test_python_dash_m_sandbox_serves_several_portals_and_writes_their_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "portals.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port=0",
            "--portals=3",
            f"--portals-file={path}",
            "--seed=1",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(7)]
        assert banner[0] == "Bitrix24 sandbox: 3 independent portals on 127.0.0.1\n"
        assert [line.split(":")[0] for line in banner[1:4]] == [
            "  portal1",
            "  portal2",
            "  portal3",
        ]
        assert banner[5] == f"  portals file: {path}\n"
        # Written before the banner, readable by its owner only: it holds the webhook codes.
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        portals = json.loads(path.read_text())
        assert list(portals) == ["portal1", "portal2", "portal3"]
        assert all(list(p) == ["webhook_url"] for p in portals.values())
        assert all(WEBHOOK.match(p["webhook_url"]) for p in portals.values())
        assert len({p["webhook_url"] for p in portals.values()}) == 3
        with httpx.Client() as client:
            first, second, _ = (p["webhook_url"] for p in portals.values())
            changed = {**GET, "fields": {"title": "Only on portal 1"}}
            assert client.post(first + "crm.item.update", json=changed).status_code == 200
            seen = client.post(second + "crm.item.get", json=GET).json()
            assert seen["result"]["item"]["title"] == "Deal #1"
            requests = []
            for line, webhook in zip(banner[1:4], portals.values(), strict=True):
                assert webhook["webhook_url"] in line
                control = line.split("control: ")[1].strip()
                requests.append(client.get(control + "counters").json()["requests"])
            assert requests == [1, 1, 0]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0
    assert not path.exists()  # gone with the portals it described


def test_one_portal_on_a_free_port_prints_the_port_it_got(tmp_path: Path) -> None:
    path = tmp_path / "portals.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port=0", "--seed=1", f"--portals-file={path}"],
        stdout=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.fullmatch(r"Bitrix24 sandbox portal on (http://127\.0\.0\.1:([0-9]+))\n", first)
        assert match is not None
        assert int(match[2]) != 0
        webhook = f"{match[1]}/rest/1/sandboxwebhook01/"
        assert json.loads(path.read_text()) == {"portal1": {"webhook_url": webhook}}
        response = httpx.post(webhook + "crm.item.get", json=GET)
        assert response.json()["result"]["item"]["title"] == "Deal #1"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0


def _two_ports_with_the_second_taken() -> tuple[int, socket.socket]:
    """A free port, and a listening socket on the port after it."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        taken = socket.socket()
        try:
            taken.bind(("127.0.0.1", port + 1))
        except OSError:
            taken.close()
            continue
        taken.listen()
        return port, taken


def test_a_port_in_use_is_named_and_nothing_is_served() -> None:
    port, taken = _two_ports_with_the_second_taken()
    with taken:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", f"--port={port}", "--portals=2"],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=30,
            check=False,
        )
    assert result.returncode == 3
    assert (
        result.stderr == f"sandbox: cannot listen on 127.0.0.1:{port + 1}: Address already in use\n"
    )
    assert result.stdout == ""


def test_portals_after_the_first_start_from_copies_of_its_seed() -> None:
    portals = open_portals(SandboxConfig(port=0, seed_items=2), 3)
    try:
        first, second, third = (p.state for p in portals.handles)
        assert second.schemas is first.schemas  # read-only, built once
        contact = first.store.get(3, 1)
        assert contact is not None
        copied = second.store.get(3, 1)
        assert copied == contact
        assert copied is not contact
        contact["fm"].append({"id": 99, "typeId": "PHONE", "value": "+1"})
        contact["observers"].append(7)
        assert second.store.get(3, 1) == third.store.get(3, 1) != contact
        assert second.store.next_fm_id() == third.store.next_fm_id() == first.store.next_fm_id()
    finally:
        portals.close()
