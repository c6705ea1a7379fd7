"""How good is `jobs show`'s estimate? A rate-bound bulk job, followed as users do.

    python bench/jobs_eta.py [--commands 8000] [--burst 10] [--rate 2]

A sandbox portal whose request bucket alone binds (burst 10, 2 requests/s:
100 updates a second in batches of 50), `b24-worker run` (JSON logs, the job
store in a file of its own), then `b24-worker publish FILE --job NAME`; while
it runs, `b24-worker jobs show NAME --json` is asked every second, as an
operator's terminal would. The estimate read first at or past 25% done is
compared with the time the job really took from that moment on.

Prints the figures and adds them to bench/results/jobs-eta.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import WorkerProcess, delete_worker_queues, paced_sandbox, worker_env, write_results

BATCH = 50


def tool(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=8000)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2.0)
    options = parser.parse_args()
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    workdir = Path(tempfile.mkdtemp(prefix="jobs-eta-"))
    commands = workdir / "prices.jsonl"
    commands.write_text(
        "".join(
            json.dumps({"entityTypeId": 2, "id": n, "fields": {"opportunity": n}}) + "\n"
            for n in range(1, options.commands + 1)
        )
    )
    job = "prices"
    with paced_sandbox(commands=options.commands, burst=options.burst, rate=options.rate) as portal:
        env = worker_env(
            prefix,
            B24_WEBHOOK_URL=portal.webhook_url,
            B24_ALLOW_HTTP="true",
            B24_RATE_BURST=str(options.burst),
            B24_RATE_PER_SECOND=str(options.rate),
            BATCH_SIZE=str(BATCH),
            REGISTRY_PATH=str(workdir / "portals.sqlite3"),
        )
        worker = WorkerProcess(env)
        try:
            time.sleep(2)  # the worker is consuming
            published = tool(env, "publish", str(commands), "--job", job)
            if published.returncode != 0:
                raise SystemExit(published.stdout + published.stderr)
            started = time.time()
            at_quarter: tuple[float, float, float] | None = None  # (when, share, ETA)
            samples = 0
            while True:
                shown = tool(env, "jobs", "show", job, "--json")
                state = json.loads(shown.stdout)
                samples += 1
                share = state["ended"] / state["queued"]
                if at_quarter is None and share >= 0.25 and state["etaSeconds"] is not None:
                    at_quarter = (time.time(), share, float(state["etaSeconds"]))
                if state["state"] == "done":
                    ended_at = float(state["lastResultAt"])
                    break
                time.sleep(1)
        finally:
            worker.stop()
            asyncio.run(delete_worker_queues(prefix))
    if at_quarter is None:
        raise SystemExit("the job ended before a quarter of it was read")
    read_at, share, eta_s = at_quarter
    actual_s = ended_at - read_at
    error = abs(eta_s - actual_s) / actual_s
    ideal_s = (-(-options.commands // BATCH) - options.burst) / options.rate
    lines = [
        f"job of {options.commands} commands; portal burst {options.burst}, {options.rate}/s; "
        f"BATCH_SIZE {BATCH}; ideal {ideal_s:.1f} s after the burst",
        f"whole job: {ended_at - started:.1f} s from publish to its last result; "
        f"{samples} `jobs show` reads",
        f"at {share:.1%} done: ETA {eta_s:.1f} s; it took {actual_s:.1f} s more; "
        f"error {error:.1%} (target within 15%)",
    ]
    write_results("jobs-eta", lines)
    return 0 if error <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
