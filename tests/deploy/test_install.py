"""The package as a production host installs it: the worker's lock and the project,
without the sandbox extra, in a fresh virtualenv. The worker in it applies a command
sent by an UpdateClient in it, against the broker and a sandbox portal run from here."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, serve_in_thread
from tests.worker.broker import connected, unique_topology

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

_SEND_ONE = """
import asyncio, sys
from worker.client import UpdateClient

async def main() -> None:
    async with UpdateClient(sys.argv[1], queue=sys.argv[2]) as client:
        outcome = await client.update(2, 3, {"title": "from a clean install"}, timeout_s=60)
    print(outcome.status)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a virtualenv holding requirements/worker.txt and the project alone."""
    where = tmp_path_factory.mktemp("install")
    source = where / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("worker", "schemas", "sandbox"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    venv.create(where / "venv", with_pip=True)
    pip = [str(where / "venv" / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    lock = str(ROOT / "requirements" / "worker.txt")
    for args in (["--require-hashes", "-r", lock], ["--no-deps", str(source)]):
        subprocess.run([*pip, "install", "--quiet", *args], check=True, timeout=600)
    return where / "venv" / "bin"


@pytest.fixture(scope="module")
def portal() -> Iterator[RunningSandbox]:
    with serve_in_thread(SandboxConfig(seed_items=5)) as running:
        yield running


def test_the_sandbox_extra_is_not_installed_and_the_sandbox_runs_without_it(
    installed: Path,
) -> None:
    """The extra only makes the sandbox faster (httptools); HTTPS needs cryptography,
    which the worker's registry installs anyway."""
    found = subprocess.run(
        [str(installed / "python"), "-c", "import httptools"], capture_output=True, check=False
    )
    assert found.returncode == 1
    listed = subprocess.run(
        [str(installed / "b24-worker"), "sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "--https" in listed.stdout


def test_the_installed_distribution_carries_the_version_its_command_prints(
    installed: Path,
) -> None:
    from worker import __version__

    shown = subprocess.run(
        [str(installed / "b24-worker"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    metadata = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('b24-update-worker'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert shown == f"b24-worker {__version__} (b24-update-worker)"
    assert metadata == __version__


def test_the_installed_worker_seals_its_registry_with_what_it_installed(
    installed: Path,
) -> None:
    """cryptography is the worker's own dependency (the registry's secrets), not the sandbox's."""
    key = subprocess.run(
        [str(installed / "b24-worker"), "portals", "keygen"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert key.returncode == 0, key.stderr
    assert len(key.stdout.strip()) == 44  # 32 bytes, url-safe base64


async def test_the_installed_worker_applies_what_the_installed_client_sends(
    installed: Path, portal: RunningSandbox, amqp_url: str
) -> None:
    topology = unique_topology()
    env = {
        "PATH": f"{installed}:/usr/bin:/bin",
        "AMQP_URL": amqp_url,
        "B24_WEBHOOK_URL": portal.webhook_url,
        "UPDATE_QUEUE": topology.update_queue,
        "RESULT_QUEUE": topology.result_queue,
        "DEAD_LETTER_QUEUE": topology.dead_letter_queue,
        # The topology's tiers, which `connected` deletes afterwards.
        "RETRY_DELAYS_S": ",".join(str(delay) for delay in topology.retry_delays_s),
        "HTTP_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    async with connected(amqp_url, topology) as broker:
        worker = await asyncio.create_subprocess_exec(
            str(installed / "b24-worker"),
            "run",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await _until_declared(broker, topology.update_queue)
            client = await asyncio.create_subprocess_exec(
                str(installed / "python"),
                "-c",
                _SEND_ONE,
                amqp_url,
                topology.update_queue,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            sent, errors = await asyncio.wait_for(client.communicate(), 120)
            assert sent.decode().strip() == "succeeded", errors.decode()
        finally:
            worker.terminate()
            printed, _ = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 0, printed.decode()
    async with httpx.AsyncClient(timeout=10) as http:
        item = (await http.get(f"{portal.control_url}/items/2/3")).json()
    assert item["title"] == "from a clean install"


async def _until_declared(broker: AbstractRobustConnection, queue: str) -> None:
    """Wait until the worker has declared its queues (a passive declare finds them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        channel = await broker.channel()
        try:
            await channel.declare_queue(queue, passive=True)
            return
        except aio_pika.exceptions.ChannelNotFoundEntity:
            if loop.time() > deadline:
                raise AssertionError(f"the worker did not declare {queue} in 30 s") from None
        finally:
            if not channel.is_closed:
                await channel.close()
        await asyncio.sleep(0.2)
