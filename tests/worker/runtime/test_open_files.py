"""The worker's limit of open files: raised to the hard limit at its start, and
a warning when even that is short of what its portals may need.

Real `python -m worker run` processes started with the limits under test
(forty webhook portals, each a queue of its own, no command sent), the broker
at AMQP_URL.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.env import clean_env
from tests.worker.broker import connected, unique_topology
from worker.amqp.topology import Topology

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[3]
PORTALS = tuple(f"p{n:02d}" for n in range(40))
# Forty portals at their busiest: 5 HTTP connections each, the 17 AMQP
# connections, 64 for the rest (worker/observability/openfiles.py).
NEEDED = 40 * 5 + 17 + 64


def _limited(soft: int, hard: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _start(
    amqp_url: str, topology: Topology, log: Path, soft: int, hard: int
) -> tuple[list[dict[str, Any]], str]:
    """Start a worker with these limits of open files; its log lines up to
    `worker.started`, with its process's limits as /proc shows them then."""
    portals = {key: {"webhook_url": f"http://127.0.0.1:9/rest/1/{key}/"} for key in PORTALS}
    env = clean_env(
        AMQP_URL=amqp_url,
        UPDATE_QUEUE=topology.update_queue,
        RESULT_QUEUE=topology.result_queue,
        DEAD_LETTER_QUEUE=topology.dead_letter_queue,
        RETRY_DELAYS_S=",".join(str(delay) for delay in topology.retry_delays_s),
        B24_PORTALS=json.dumps(portals),
        B24_DEFAULT_PORTAL=PORTALS[0],
        HTTP_PORT="0",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_limited(soft, hard),
        )
    try:
        deadline = time.monotonic() + 60
        while '"worker.started"' not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        limits = Path(f"/proc/{process.pid}/limits").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-3000:]
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return lines, limits


def _open_files(limits: str) -> tuple[int, int]:
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


@pytest.mark.parametrize(
    ("soft", "hard", "short"),
    [
        pytest.param(64, 4096, False, id="raised-to-the-hard-limit"),
        pytest.param(100, 100, True, id="the-hard-limit-short-of-the-portals-needs"),
    ],
)
async def test_the_worker_runs_with_its_hard_limit_and_says_when_that_is_short(
    amqp_url: str, tmp_path: Path, soft: int, hard: int, short: bool
) -> None:
    topology = dataclasses.replace(unique_topology(), portals=PORTALS)
    async with connected(amqp_url, topology):
        lines, limits = _start(amqp_url, topology, tmp_path / "worker.log", soft, hard)
    assert _open_files(limits) == (hard, hard)
    started = next(line for line in lines if line["event"] == "worker.started")
    assert started["open_files"] == hard
    low = [line for line in lines if line["event"] == "open_files.low"]
    if not short:
        assert low == []
        return
    assert len(low) == 1
    assert low[0]["limit"] == hard
    assert low[0]["needed"] == NEEDED
    assert low[0]["portals"] == len(PORTALS)
    assert "LimitNOFILE" in low[0]["hint"]
