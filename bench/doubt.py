"""fm additions whose answers are lost: how many end in doubt, with and without reading back.

    python bench/doubt.py [--contacts 1000] [--lost 0.3] [--read-back-after 60]

Real processes: a sandbox portal (limits off, a fixed fault seed) that carries
out every call and then drops the connection without an answer for a share
of the calls that saved an item (`disconnect_rate`, `disconnect_writes_only`),
and `b24-worker run` (JSON logs, default BATCH_SIZE). One phone is added to
each contact, once with reading back (B24_READ_BACK_AFTER_S as given, 60 s
by default, as the worker runs by default) and once without (0). Printed: the
calls, the answers lost, the outcomes (answered, verified by reading back, in
doubt), how often each phone is on its contact at the end, and the time.

Adds the figures to bench/results/doubt.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    Sandbox,
    WorkerProcess,
    delete_worker_queues,
    drain,
    publish,
    worker_env,
    write_results,
)

CONTACT = 3


def phone(n: int) -> str:
    return f"+1-555-{n:05d}"


def run(contacts: int, lost: float, read_back_after_s: float) -> list[str]:
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    options = ["--seed", str(contacts), "--no-limits", "--random-seed", "20261206"]
    with Sandbox(options) as portal:
        faults = {"disconnect_rate": lost, "disconnect_writes_only": True}
        httpx.patch(f"{portal.base_url}/_sandbox/faults", json=faults).raise_for_status()
        env = worker_env(
            prefix,
            B24_WEBHOOK_URL=portal.webhook_url,
            B24_ALLOW_HTTP="true",
            B24_RATE_BURST="100000",
            B24_RATE_PER_SECOND="100000",
            B24_READ_BACK_AFTER_S=str(read_back_after_s),
        )
        commands = [
            (
                {
                    "entityTypeId": CONTACT,
                    "id": n,
                    "fields": {
                        "fm": {"n0": {"typeId": "PHONE", "valueType": "WORK", "value": phone(n)}}
                    },
                },
                {},
            )
            for n in range(1, contacts + 1)
        ]
        asyncio.run(publish(f"{prefix}update", commands))
        started = time.monotonic()
        worker = WorkerProcess(env)
        try:
            while True:
                worker.log.read()
                if len(worker.log.ended) >= contacts or worker.process.poll() is not None:
                    break
                time.sleep(0.5)
            took_s = time.monotonic() - started
        finally:
            worker.stop()
        events = asyncio.run(drain(f"{prefix}result")) + asyncio.run(drain(f"{prefix}dead"))
        counters = portal.counters()
        stored = Counter[int]()
        for n in range(1, contacts + 1):
            item: dict[str, Any] = httpx.get(
                f"{portal.base_url}/_sandbox/items/{CONTACT}/{n}"
            ).json()
            stored[sum(1 for e in item.get("fm", []) if e.get("value") == phone(n))] += 1
    asyncio.run(delete_worker_queues(prefix))
    outcomes = Counter(
        ("verified" if e.get("verifiedByReadBack") else "answered")
        if e["status"] == "succeeded"
        else e["error"]["class"]
        for e in events
    )
    doubt = outcomes.get("in_doubt", 0)
    mode = f"reading back after {read_back_after_s:g} s" if read_back_after_s else "no reading back"
    return [
        f"{mode}: {contacts} phone additions, {counters['calls'].get('batch', 0)} batch calls "
        f"and {counters['calls'].get('crm.item.get', 0)} item reads; "
        f"{counters['disconnects']} answers lost (each saving call's with probability "
        f"{lost:.0%}); "
        f"{took_s:.1f} s",
        f"  outcomes: {dict(sorted(outcomes.items()))}; in doubt {doubt / contacts:.1%} "
        "(target at most 1%)",
        f"  each phone on its contact: {dict(sorted(stored.items()))} (times: contacts)",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--lost", type=float, default=0.3)
    parser.add_argument("--read-back-after", type=float, default=60.0)
    args = parser.parse_args()
    lines = run(args.contacts, args.lost, args.read_back_after)
    lines += run(args.contacts, args.lost, 0)
    write_results("doubt", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
