"""/status in a real browser: headless Chromium (Debian's `chromium`, which
.ci/run installs) loads the page while the worker runs, and the page shows the
portals with their states, the queues and the running job."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.conftest import in_ci
from tests.reliability.processes import free_port
from tests.worker.broker import connected, take
from tests.worker.e2e import control, eventually, running_worker, settings_for
from tests.worker.tools.helpers import run_tool, tool_env
from worker.observability.status import REFRESH_S

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

# As root, with this machine's closed network: no sandbox, no background fetches.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        message = "no chromium (apt-get install chromium; make services tries)"
        if in_ci():
            pytest.fail(message + ": .ci/run should have installed it")
        pytest.skip(message)
    return found


async def load(chromium: str, url: str, profile: Path) -> str:
    """The page's DOM as Chromium rendered it."""
    process = await asyncio.create_subprocess_exec(
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    dom, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return dom.decode()


class Rows(HTMLParser):
    """Each table row's cells' text, by the row's data-portal or data-job."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.worker = ""
        self._row: list[str] | None = None
        self._in_worker = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr":
            name = found.get("data-portal") or found.get("data-job")
            self._row = self.rows.setdefault(f"{tag}:{name}", []) if name else None
        elif tag == "td" and self._row is not None:
            self._row.append("")
        elif tag == "p" and found.get("id") == "worker":
            self._in_worker = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        elif tag == "p":
            self._in_worker = False

    def handle_data(self, data: str) -> None:
        if self._row:
            self._row[-1] += data
        if self._in_worker:
            self.worker += data


@pytest.fixture
async def portals() -> AsyncIterator[tuple[RunningSandbox, RunningSandbox]]:
    # north: one call a second of up to 5 commands, so an 80-command job runs for 16 s.
    slow = SandboxConfig(seed_items=80, rate_burst=1, rate_per_second=1.0)
    async with (
        running_sandbox(slow) as north,
        running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as south,
    ):
        yield north, south


async def test_the_status_page_shows_portals_states_queues_and_a_running_job(
    amqp_url: str,
    chromium: str,
    portals: tuple[RunningSandbox, RunningSandbox],
    tmp_path: Path,
) -> None:
    north, south = portals
    control(south, "PATCH", "faults", {"overload": True})  # south is blocked
    port = free_port()
    settings = settings_for(
        amqp_url,
        north,
        HTTP_PORT=port,
        B24_PORTAL_KEY="north",
        B24_DEFAULT_PORTAL="north",
        B24_RATE_BURST=1,
        B24_RATE_PER_SECOND=1.0,
        BATCH_SIZE=5,
        REGISTRY_PATH=str(tmp_path / "portals.sqlite3"),
        B24_PORTALS={"south": {"webhook_url": south.webhook_url}},
    )
    commands = tmp_path / "prices.jsonl"
    commands.write_text(
        "".join(
            json.dumps({"entityTypeId": 2, "id": n, "fields": {"title": f"P{n}"}}) + "\n"
            for n in range(1, 81)
        )
    )
    blocked = tmp_path / "south.jsonl"
    blocked.write_text(json.dumps({"entityTypeId": 2, "id": 1, "fields": {"title": "S"}}) + "\n")
    started = time.monotonic()
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        env = tool_env(amqp_url, worker.topology, REGISTRY_PATH=settings.REGISTRY_PATH)
        ran = await run_tool("publish", str(blocked), "--portal", "south", env=env)
        assert ran.returncode == 0, ran.stderr
        await eventually(lambda: worker.lanes["south"].pipeline.down == "blocked")
        ran = await run_tool("publish", str(commands), "--job", "prices", env=env)
        assert ran.returncode == 0, ran.stderr
        await take(broker, settings.RESULT_QUEUE, 5)  # the job is under way
        # The page reads the queues again once their last reading (at the start) is
        # older than its refresh.
        await asyncio.sleep(max(0.0, started + REFRESH_S + 0.5 - time.monotonic()))
        dom = await load(chromium, f"http://127.0.0.1:{port}/status", tmp_path / "profile")
    page = Rows()
    page.feed(dom)
    assert "<title>b24-worker status</title>" in dom
    assert page.worker.startswith("ready")
    north_row, south_row = page.rows["tr:north"], page.rows["tr:south"]
    assert north_row[:3] == ["north", "up", "1/s, burst 1"]
    assert south_row[:2] == ["south", "blocked"]
    assert south_row[3:5] == ["1", "0"]  # its command waits on its queue, not in the worker
    job = page.rows["tr:prices"]
    assert job[0] == "prices"
    ended, of = (int(n) for n in job[2].split(" of "))
    assert of == 80
    assert 5 <= ended < 80
    assert job[1].strip().endswith("%")
    assert worker.topology.portal_queue("south") in dom  # the queues' table
