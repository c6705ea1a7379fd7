"""The same updates done by a popular client library, fast-bitrix24, beside the worker.

    pip install -e .[bench]                      # brings fast-bitrix24 1.8.x
    python bench/vs_fast_bitrix24.py [--count 10000]

Both run against a fresh sandbox portal at cloud limits (burst 50, 2/s; the
operating cost kept under the 0.1 s charging floor, so only the bucket
binds), with the same N updates of N distinct deals.

- fast-bitrix24: ``Bitrix(webhook_url, verbose=False).call("crm.item.update", items)``
  in this process, timed from the call to its return (or to the exception it
  raises), twice: with its defaults, which are the cloud's limits (a pool of
  50 requests, then 2 per second; up to 50 requests in flight; 50 commands
  per batch; 480 s of operating time), and inside ``bitrix.slow(1)``, its
  own switch to one request at a time. It speaks plain http to the loopback
  webhook as it is: aiohttp ignores its ``ssl`` option for an http URL.
- the worker: ``bench/worker_pacing.py``'s cloud run (queue filled first,
  timed from the first delivery to the last settled message).

What the library did is judged by the sandbox: its requests, its 503 and 429
answers, and how many deals carry the title sent.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Sandbox, write_results
from worker_pacing import SCENARIOS, UNCHARGED, outcome_lines, run


def run_library(count: int, *, one_at_a_time: bool) -> list[str]:
    """fast-bitrix24 against a fresh sandbox; the lines describing what it did."""
    from fast_bitrix24 import Bitrix  # type: ignore[import-untyped,import-not-found,unused-ignore]

    items = [
        {"entityTypeId": 2, "id": i, "fields": {"title": f"library {i}"}}
        for i in range(1, count + 1)
    ]
    # When a call gives up, the library leaves its other requests' tasks behind and
    # asyncio reports each one on stderr; what the library did is read from the sandbox.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    with Sandbox(["--seed", str(count), "--spa-types", "", *UNCHARGED]) as portal:
        bitrix = Bitrix(portal.webhook_url, verbose=False)
        error = ""
        start = time.perf_counter()
        try:
            with bitrix.slow(1) if one_at_a_time else contextlib.nullcontext():
                answers: Any = bitrix.call("crm.item.update", items)
        except Exception as exc:  # reported as the library's result, whatever it is
            answers, error = (), f"{type(exc).__name__}: {exc}"[:300]
        elapsed = time.perf_counter() - start
        counters = portal.counters()
        stored = httpx.get(f"{portal.base_url}/_sandbox/items/2", timeout=60).json()
    applied = sum(1 for item in stored if item["title"] == f"library {item['id']}")
    ideal = SCENARIOS["cloud"].ideal_s(count)
    how = "with slow(1), one request at a time" if one_at_a_time else "defaults"
    outcome = (
        f"gave up after {elapsed:.2f} s with {error}"
        if error
        else f"{count} updates in {elapsed:.2f} s: {count / elapsed:.2f} updates/s, "
        f"{ideal / elapsed:.1%} of the ideal rate"
    )
    return [
        f"fast-bitrix24 {version('fast-bitrix24')}, {how}: {outcome}",
        f"  answers returned {len(answers)}; deals carrying the title sent {applied}",
        f"  sandbox: {counters['requests']} requests, {counters['query_limit_rejections']} 503 "
        f"QUERY_LIMIT_EXCEEDED, {counters['operation_limit_rejections']} 429 "
        f"OPERATION_TIME_LIMIT, statuses {counters['statuses']}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    cloud = SCENARIOS["cloud"]
    ideal = cloud.ideal_s(args.count)
    lines = [
        f"{args.count} updates of distinct deals; cloud limits (burst 50, 2/s); "
        f"ideal (ceil({args.count}/50) - 50) / 2 = {ideal:.2f} s",
        *run_library(args.count, one_at_a_time=False),
        *run_library(args.count, one_at_a_time=True),
    ]
    worker = run(cloud, args.count)
    elapsed = worker.elapsed_s
    lines += [
        f"worker: {args.count} updates in {elapsed:.2f} s: {args.count / elapsed:.2f} updates/s, "
        f"{ideal / elapsed:.1%} of the ideal rate",
        *(f"  {line}" for line in outcome_lines(worker)),
    ]
    write_results("vs_fast_bitrix24", lines)
    return 0 if worker.complete and not math.isnan(elapsed) else 1


if __name__ == "__main__":
    sys.exit(main())
