"""The worker's garbage collector, timed by bench/gc_probe: turning it on, reading it.

The probe is a ``sitecustomize`` module put on the worker's PYTHONPATH; it
acts only in ``python -m worker run`` and writes, at the worker's exit, the
CPU seconds each generation's collections took. BENCH_GC_THRESHOLD in the
environment (a,b,c) makes it set other thresholds first.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["GcProbe", "gc_lines"]

_PROBE = Path(__file__).resolve().parent / "gc_probe"


class GcProbe:
    """One worker's collector record: the settings to start it with, then what it wrote."""

    def __init__(self) -> None:
        self.output = tempfile.mkstemp(prefix="worker-gc-")[1]

    def settings(self) -> dict[str, str]:
        paths = [str(_PROBE), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {"PYTHONPATH": os.pathsep.join(paths), "BENCH_GC_PROBE": self.output}

    def record(self, pid: int) -> dict[str, Any] | None:
        """What the probe wrote at the exit of worker ``pid`` (None if it wrote nothing)."""
        try:
            record: dict[str, Any] = json.loads(Path(f"{self.output}.{pid}").read_text())
        except (OSError, ValueError):
            return None
        return record


def gc_lines(record: dict[str, Any] | None) -> list[str]:
    if record is None:
        return []
    spent, total = sum(record["gc_s"]), record["cpu_s"]
    per_generation = ", ".join(
        f"generation {gen}: {count} ({seconds:.2f} s)"
        for gen, (count, seconds) in enumerate(
            zip(record["collections"], record["gc_s"], strict=True)
        )
    )
    return [
        f"worker's garbage collector: {spent:.2f} s of its {total:.2f} s CPU "
        f"({spent / total:.1%}, start-up included); thresholds {tuple(record['threshold'])}; "
        f"collections: {per_generation}"
    ]
