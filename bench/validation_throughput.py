"""Commands validated per second, from raw bytes, on one core.

The body is the reference's deal example (crm.item.update, webhook curl). The
first figure is validation alone (schemas.parse_command on the raw bytes); the
second adds building the parameters that would be sent, as the worker does
per message.

    python bench/validation_throughput.py [--seconds 5]

The figures go to bench/results/validation_throughput.txt too, with the
machine's load: anything else running on the core disturbs them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from schemas import parse_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import load_average, write_results

DEAL_EXAMPLE = (
    b'{"entityTypeId":2,"id":351,"fields":{"title":"REST Deal #1","stageId":"C9:UC_NYL06U",'
    b'"assignedById":6,"observers":[1,2,3],"opened":"N","typeId":"SERVICE",'
    b'"opportunity":10000,"currencyId":"USD","additionalInfo":"Updating deal via REST",'
    b'"isManualOpportunity":"N","utmSource":"google","ufCrm_1721244707107":200.05,'
    b'"parentId1220":2}}'
)


# Rates are per second of this process's CPU time: on a shared virtual machine
# the wall clock also counts time the core was lent to others.
def _validate(count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        parse_command(DEAL_EXAMPLE)
    return count / (time.process_time() - start)


def _validate_and_build(count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        parse_command(DEAL_EXAMPLE).to_params()
    return count / (time.process_time() - start)


def _measure(round_: Callable[[int], float], seconds: float) -> list[float]:
    round_(2_000)  # warm up
    rates = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rates.append(round_(5_000))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # one core
    lines = [
        f"body: reference deal example, {len(DEAL_EXAMPLE)} bytes; one core; rounds of 5000; "
        "per CPU second",
        f"{load_average()} at the start",
    ]
    for label, round_ in (
        ("validated per second", _validate),
        ("validated + params built per second", _validate_and_build),
    ):
        rates = _measure(round_, args.seconds)
        lines.append(
            f"{label}: median {statistics.median(rates):,.0f}, "
            f"min {min(rates):,.0f}, max {max(rates):,.0f} ({len(rates)} rounds)"
        )
    lines += [f"{load_average()} at the end", "target: 50,000 validated per second"]
    write_results("validation_throughput", lines)


if __name__ == "__main__":
    main()
