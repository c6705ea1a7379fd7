"""Last in the package (pytest runs its modules in the order of their names): the
cluster the package's tests shared is taken down, and down() leaves no process and
no file behind."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.amqp_ping import answers
from tests.cluster.harness import Cluster, installed
from tests.conftest import in_ci

pytestmark = [
    pytest.mark.cluster,
    # In CI a machine without RabbitMQ fails these tests rather than skipping them.
    pytest.mark.skipif(
        not installed() and not in_ci(), reason="RabbitMQ (rabbitmq-server) is not installed"
    ),
]


def test_down_leaves_no_process_and_no_file_behind(started: Cluster) -> None:
    processes = started.processes()
    assert len(processes) >= started.size
    base_dir = started.base_dir
    started.down()
    assert started.processes() == []
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in processes)
    assert started.running() == []
    assert not any(answers(url, timeout_s=1.0) for url in started.urls)
    assert not base_dir.exists()
    epmd = shutil.which("epmd")
    if epmd is not None:
        names = subprocess.run([epmd, "-names"], capture_output=True, text=True, check=False)
        assert "b24c" not in names.stdout
    started.down()  # twice is fine


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
