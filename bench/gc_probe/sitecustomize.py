"""Counts the garbage collector's time in a worker process the benchmarks start.

Put on the worker's PYTHONPATH by bench/worker_pacing.py; it acts only in
``python -m worker run`` and only when BENCH_GC_PROBE names a file prefix.
At exit it writes the CPU seconds each generation's collections took and how
many there were to ``<prefix>.<pid>``. BENCH_GC_THRESHOLD=a,b,c sets the
collector's thresholds first, to try a setting without changing the worker;
a worker that sets its own after start-up overrides it (the record says
which thresholds were in force at the end).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from typing import Any

_OUTPUT = os.environ.get("BENCH_GC_PROBE")
_spent = [0.0, 0.0, 0.0]
_collections = [0, 0, 0]
_began = [0.0]


def _measure(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _began[0] = time.process_time()
        return
    generation = info["generation"]
    _spent[generation] += time.process_time() - _began[0]
    _collections[generation] += 1


def _report() -> None:
    record = {
        "cpu_s": time.process_time(),
        "gc_s": _spent,
        "collections": _collections,
        "threshold": gc.get_threshold(),
    }
    with open(f"{_OUTPUT}.{os.getpid()}", "w") as out:
        json.dump(record, out)


if _OUTPUT and sys.orig_argv[-3:] == ["-m", "worker", "run"]:
    threshold = os.environ.get("BENCH_GC_THRESHOLD")
    if threshold:
        gc.set_threshold(*(int(part) for part in threshold.split(",")))
    gc.callbacks.append(_measure)
    atexit.register(_report)
