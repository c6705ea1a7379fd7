"""What the processes of a run and the machine used, read from /proc.

On a two-core machine the worker, the sandbox and the broker share the
cores: a limits-off figure means little without knowing how busy the
machine was and which process took what. CPU seconds are user + system
time; the machine's own figures come from /proc/stat (``steal`` is time
the hypervisor gave to other guests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Usage",
    "broker_pid",
    "cpu_seconds",
    "load_average",
    "peak_rss_mib",
    "usage",
    "usage_lines",
]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def load_average() -> str:
    """The machine's load, for the figures that CPU contention disturbs."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return f"load average {one}, {five}, {fifteen} (1, 5, 15 min)"


def broker_pid() -> int | None:
    """The local RabbitMQ node (its Erlang VM, ``beam.smp``), if one runs here."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


@dataclass(frozen=True)
class Usage:
    """CPU seconds used so far, by named processes and by all cores together."""

    at: float  # monotonic seconds
    processes: Mapping[str, float]
    busy_s: float  # not idle, not waiting for I/O, not stolen
    steal_s: float


def usage(pids: Mapping[str, int | None]) -> Usage:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    processes = {}
    for name, pid in pids.items():
        if pid is not None:
            try:
                processes[name] = cpu_seconds(pid)
            except OSError:
                continue
    return Usage(
        at=time.monotonic(),
        processes=processes,
        busy_s=(user + nice + system + irq + softirq) / _TICK,
        steal_s=steal / _TICK,
    )


def usage_lines(start: Usage, end: Usage, messages: int) -> list[str]:
    """CPU per message by process between two snapshots, and how busy the machine was."""
    cores = os.cpu_count() or 1
    wall = end.at - start.at
    per_message = {
        name: (end.processes[name] - start.processes[name]) / messages * 1e6
        for name in start.processes
        if name in end.processes
    }
    machine = (end.busy_s - start.busy_s) / messages * 1e6
    others = machine - sum(per_message.values())
    parts = ", ".join(f"{name} {us:.0f}" for name, us in per_message.items())
    return [
        f"  CPU per message (us): {parts}, everything else {others:.0f}; machine {machine:.0f}",
        f"  machine over those {wall:.1f} s: {(end.busy_s - start.busy_s) / wall / cores:.0%} "
        f"of {cores} cores busy, {(end.steal_s - start.steal_s) / wall / cores:.0%} stolen "
        "by the hypervisor",
    ]
