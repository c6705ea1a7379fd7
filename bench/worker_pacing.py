"""The worker against a fresh sandbox portal, as users run it.

Real processes: `b24-worker sandbox` and `b24-worker run` (JSON logs on, to a
file), the broker at AMQP_URL, queues of their own. The commands are queued
before the worker starts; the clock runs from the worker's first delivery to
its last settled message, both read from its own log.

Bound by the portal's limits (not sensitive to the machine's speed):

    python bench/worker_pacing.py cloud        # 10,000 updates; burst 50, 2/s
    python bench/worker_pacing.py enterprise   # 50,000 updates; burst 250, 5/s
    python bench/worker_pacing.py single       # 300 updates, one call each (BATCH_SIZE=1)
    python bench/worker_pacing.py operating    # 12 s per 60 s window; 0.05-0.8 s per update
    python bench/worker_pacing.py operating-fixed  # the same window; 0.2 s per update

--batch-charging batch runs the sandbox charging a batch as a whole to the
method `batch` (its `--batch-charging`); the figures are then added after the
results file's earlier runs instead of replacing them.

Bound by the CPU (limits off; anything else running on the machine disturbs them):

    python bench/worker_pacing.py unlimited    # 20,000, 3 rounds: against the bare loop; CPU
    python bench/worker_pacing.py memory       # 10,000 queued before the start: peak RSS

Each prints its figures and writes them to bench/results/worker_pacing-<scenario>.txt.
BENCH_PYSPY=<file> samples the worker with py-spy from its first delivery
(for BENCH_PYSPY_S seconds, 8 by default; BENCH_PYSPY_NATIVE=1 adds C frames;
bench/profile_report.py reads the file); BENCH_PROFILE=<file> runs it under
cProfile. A profiled run writes worker_pacing-<scenario>-profiled.txt instead.
The CPU-bound runs time the worker's garbage collector (bench/gc_probe);
BENCH_GC_THRESHOLD=a,b,c sets other collector thresholds at the worker's
start, unless the worker sets its own later (results in
worker_pacing-<scenario>-gc<a_b_c>.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import run_bare_loop
from collector import GcProbe, gc_lines
from harness import (
    PySpy,
    Sandbox,
    WorkerProcess,
    delete_queues,
    drain,
    publish,
    queue_names,
    worker_env,
    write_results,
)
from usage import Usage, broker_pid, load_average, usage, usage_lines

# Under the portal's 0.1 s charging floor: no call is charged operating time,
# so the request bucket alone binds.
UNCHARGED = ("--operating-cost-s", "0.05")
# A portal with limits off has no bucket to mirror: the worker is told so.
NO_LIMITS_ENV = {
    "B24_RATE_BURST": "100000",
    "B24_RATE_PER_SECOND": "100000",
    "B24_OPERATING_LIMIT_S": "1000000",
}
# Items the sandbox seeds; longer runs update them again, SEEDED commands apart.
SEEDED = 10_000
OPERATING_LIMIT_S, OPERATING_WINDOW_S, UPDATE_COST_S = 12.0, 60.0, "0.05-0.8"


@dataclass(frozen=True)
class Scenario:
    count: int
    sandbox: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    burst: int = 50
    rate_per_s: float = 2.0
    batch_size: int = 50
    # CPU-bound runs also count the worker's garbage collection (bench/gc_probe)
    cpu_bound: bool = False

    def ideal_s(self, count: int) -> float:
        """The bucket's own pace: the burst at once, then one call per 1/rate seconds."""
        return max(0, math.ceil(count / self.batch_size) - self.burst) / self.rate_per_s


SCENARIOS: dict[str, Scenario] = {
    "cloud": Scenario(10_000, UNCHARGED),
    # 1,000 calls, 750 past the burst: the rate decides.
    "enterprise": Scenario(
        50_000,
        ("--rate-burst", "250", "--rate-per-second", "5", *UNCHARGED),
        {"B24_RATE_BURST": "250", "B24_RATE_PER_SECOND": "5"},
        burst=250,
        rate_per_s=5.0,
    ),
    "single": Scenario(300, UNCHARGED, {"BATCH_SIZE": "1"}, batch_size=1),
    # Each update costs a different time, drawn by the sandbox from its seeded source;
    # the worker knows the budget, never the cost of the next update.
    "operating": Scenario(
        150,
        (
            "--operating-limit-s",
            f"{OPERATING_LIMIT_S:g}",
            "--operating-window-s",
            f"{OPERATING_WINDOW_S:g}",
            "--operating-cost",
            f"crm.item.update={UPDATE_COST_S}",
            "--random-seed",
            "7",
            *UNCHARGED,
        ),
        {
            "B24_OPERATING_LIMIT_S": f"{OPERATING_LIMIT_S:g}",
            "B24_OPERATING_WINDOW_S": f"{OPERATING_WINDOW_S:g}",
        },
    ),
    # The worker issue's own target: every update costs 0.2 s; no 429 is allowed.
    "operating-fixed": Scenario(
        300,
        (
            "--operating-limit-s",
            f"{OPERATING_LIMIT_S:g}",
            "--operating-window-s",
            f"{OPERATING_WINDOW_S:g}",
            "--operating-cost",
            "crm.item.update=0.2",
            *UNCHARGED,
        ),
        {
            "B24_OPERATING_LIMIT_S": f"{OPERATING_LIMIT_S:g}",
            "B24_OPERATING_WINDOW_S": f"{OPERATING_WINDOW_S:g}",
        },
    ),
    "unlimited": Scenario(20_000, ("--no-limits",), NO_LIMITS_ENV, cpu_bound=True),
    "memory": Scenario(10_000, ("--no-limits",), NO_LIMITS_ENV, cpu_bound=True),
}


@dataclass
class Run:
    """What one run left: the worker's log, events, the sandbox's counters, the process's use."""

    count: int
    first: float | None
    ended: list[float]
    success_ids: list[str]
    failures: int
    counters: dict[str, Any]
    cpu_s: float
    cpu_at_first_s: float
    peak_rss_mib: float
    exit_code: int
    log_path: Path
    # (unix time, operating seconds the sandbox has charged so far), sampled during the run
    charged: list[tuple[float, float]]
    # CPU of the worker, the sandbox, the broker and this script: at the first delivery, at the end
    usage_span: tuple[Usage, Usage] | None
    # what bench/gc_probe wrote at the worker's exit (CPU-bound runs)
    gc_record: dict[str, Any] | None = None

    @property
    def elapsed_s(self) -> float:
        return self.ended[-1] - self.first if self.first is not None and self.ended else math.nan

    @property
    def complete(self) -> bool:
        return len(set(self.success_ids)) == self.count and not self.failures


def run(scenario: Scenario, count: int, *, sample_charged: bool = False) -> Run:
    """Queue ``count`` updates, run one worker until each has ended, stop everything."""
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    seeded = min(count, SEEDED)
    spy_file = os.environ.get("BENCH_PYSPY")
    profile = os.environ.get("BENCH_PROFILE")
    worker: WorkerProcess | None = None
    spy: PySpy | None = None
    with Sandbox(["--seed", str(seeded), "--spa-types", "", *scenario.sandbox]) as portal:
        try:
            commands = (
                {"entityTypeId": 2, "id": (i - 1) % seeded + 1, "fields": {"title": f"bench {i}"}}
                for i in range(1, count + 1)
            )
            asyncio.run(publish(f"{prefix}update", ((body, {}) for body in commands)))
            settings = {"B24_WEBHOOK_URL": portal.webhook_url, **scenario.env}
            # Not while py-spy samples: the probe's clock reads would show in the profile.
            probe = GcProbe() if scenario.cpu_bound and not spy_file else None
            if probe is not None:
                settings |= probe.settings()
            env = worker_env(prefix, **settings)
            options = ["-m", "cProfile", "-o", profile] if profile else []
            worker = WorkerProcess(env, python_options=options)
            log = worker.log
            pids = {
                "worker": worker.pid,
                "sandbox": portal.process.pid,
                "broker": broker_pid(),
                "this script": os.getpid(),
            }
            cpu = cpu_at_first = rss = 0.0
            first_usage = last_usage = None
            charged: list[tuple[float, float]] = []
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                # Finely until the first delivery, so the start-up's CPU can be told apart.
                time.sleep(0.02 if log.first is None else 0.5)
                log.read()
                cpu, rss, last_usage = worker.cpu_s(), worker.peak_rss_mib(), usage(pids)
                if log.first is not None and not cpu_at_first:
                    cpu_at_first, first_usage = cpu, last_usage
                    if spy_file:
                        seconds = float(os.environ.get("BENCH_PYSPY_S", "8"))
                        native = os.environ.get("BENCH_PYSPY_NATIVE") == "1"
                        spy = PySpy(worker.pid, spy_file, duration_s=seconds, native=native)
                if sample_charged:
                    spent = portal.counters()["operating_charged_s"].values()
                    charged.append((time.time(), sum(spent)))
                if len(log.ended) >= count or worker.process.poll() is not None:
                    break
            if spy is not None:
                spy.wait()
            exit_code = worker.stop()
            log.read()
            events = asyncio.run(drain(f"{prefix}result"))
            dead = asyncio.run(drain(f"{prefix}dead"))
            counters = portal.counters()
        finally:
            if spy is not None:
                spy.stop()
            if worker is not None:
                worker.stop()
            asyncio.run(delete_queues(queue_names(prefix)))
    return Run(
        count=count,
        first=log.first,
        ended=log.ended,
        success_ids=[e["messageId"] for e in events],
        failures=len(dead),
        counters=counters,
        cpu_s=cpu,
        cpu_at_first_s=cpu_at_first,
        peak_rss_mib=rss,
        exit_code=exit_code,
        log_path=log.path,
        charged=charged,
        usage_span=(first_usage, last_usage) if first_usage and last_usage else None,
        gc_record=probe.record(worker.pid) if probe is not None else None,
    )


def outcome_lines(result: Run) -> list[str]:
    ids = result.success_ids
    c = result.counters
    return [
        f"successes: {len(ids)} ({len(set(ids))} distinct, {len(ids) - len(set(ids))} "
        f"duplicates); failures: {result.failures}; worker exit code {result.exit_code}",
        f"sandbox: {c['requests']} requests, {c['query_limit_rejections']} 503 "
        f"QUERY_LIMIT_EXCEEDED, {c['operation_limit_rejections']} 429 OPERATION_TIME_LIMIT",
        f"calls the sandbox counted: {_calls(c['calls'])}",
        f"worker log: {result.log_path}",
    ]


def _calls(calls: dict[str, int]) -> str:
    text = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
    if calls.get("batch"):
        text += f" ({calls.get('crm.item.update', 0) / calls['batch']:.1f} updates per batch)"
    return text


def rate_lines(scenario: Scenario, result: Run) -> list[str]:
    """Updates per second against the bucket's own pace."""
    ideal = scenario.ideal_s(result.count)
    elapsed = result.elapsed_s
    calls = f"ceil({result.count}/{scenario.batch_size})" if scenario.batch_size > 1 else "N"
    return [
        f"limits: burst {scenario.burst}, {scenario.rate_per_s:g}/s; BATCH_SIZE "
        f"{scenario.batch_size}; operating time uncharged (0.05 s per call, under the 0.1 s floor)",
        f"time from first delivery to last settled message: {elapsed:.2f} s",
        f"ideal ({calls} - {scenario.burst}) / {scenario.rate_per_s:g} = {ideal:.2f} s",
        f"updates/s: worker {result.count / elapsed:.2f}, ideal {result.count / ideal:.2f}; "
        f"worker reached {ideal / elapsed:.1%} of the ideal rate",
    ]


def operating_lines(result: Run, cost: str = UPDATE_COST_S) -> list[str]:
    """Budget used per window: windows line up with the sandbox's (unix time, per 60 s)."""
    if result.first is None or not result.charged:
        return ["no delivery: nothing to report"]
    first_window = int(result.first // OPERATING_WINDOW_S)
    last_window = int(result.ended[-1] // OPERATING_WINDOW_S)
    spent_by_window: dict[int, float] = {}
    for stamp, spent in result.charged:  # the last sample of each window holds its total
        spent_by_window[int(stamp // OPERATING_WINDOW_S)] = spent
    lines = [
        f"operating limit {OPERATING_LIMIT_S:g} s per {OPERATING_WINDOW_S:g} s window; each "
        f"update's cost {cost} s"
        + (" (uniform, seeded; under 0.1 s uncharged)" if "-" in cost else ""),
        f"time from first delivery to last settled message: {result.elapsed_s:.1f} s",
        "window (start)  updates ended  charged s  share of the budget",
    ]
    before = 0.0
    shares = []
    for window in range(first_window, last_window + 1):
        spent = spent_by_window.get(window, before)
        ended = sum(1 for s in result.ended if int(s // OPERATING_WINDOW_S) == window)
        share = (spent - before) / OPERATING_LIMIT_S
        whole = first_window < window < last_window
        if whole:
            shares.append(share)
        start = time.strftime("%H:%M:%S", time.localtime(window * OPERATING_WINDOW_S))
        note = "" if whole else " (partial: the run began or ended in it)"
        lines.append(
            f"{start}        {ended:>5}          {spent - before:7.2f}    {share:6.1%}{note}"
        )
        before = spent
    mean = sum(shares) / len(shares) if shares else math.nan
    lines.append(
        f"whole windows: {len(shares)}; budget used: mean {mean:.1%}, "
        f"min {min(shares, default=math.nan):.1%}, max {max(shares, default=math.nan):.1%}"
    )
    return lines


BareRun = tuple[float, float, list[str]]  # seconds, CPU seconds, what the machine used


def unlimited_lines(result: Run, bare_runs: list[BareRun]) -> tuple[list[str], float]:
    """The worker's figures beside the bare loop's before and after it; and their ratio."""
    count, elapsed = result.count, result.elapsed_s
    working_cpu = result.cpu_s - result.cpu_at_first_s
    lines = [
        f"  worker: {count} messages in {elapsed:.2f} s: {count / elapsed:.0f} messages/s; "
        f"{load_average()} at its end",
        f"  worker CPU: {working_cpu / count * 1e6:.0f} us per message from its first delivery "
        f"({result.cpu_s / count * 1e6:.0f} us with start-up: {result.cpu_at_first_s:.2f} s); "
        f"peak RSS (VmHWM) {result.peak_rss_mib:.1f} MiB",
    ]
    if result.usage_span is not None:
        lines += usage_lines(*result.usage_span, count)
    lines += [f"  {line}" for line in gc_lines(result.gc_record)]
    for when, (bare_s, bare_cpu, usage_text) in zip(("before", "after"), bare_runs, strict=True):
        lines.append(
            f"  bare loop {when} the worker, same broker: {count / bare_s:.0f} messages/s; "
            f"{bare_cpu / count * 1e6:.0f} us CPU per message"
        )
        lines += usage_text
    bare_rate = sum(count / bare_s for bare_s, _, _ in bare_runs) / len(bare_runs)
    ratio = (count / elapsed) / bare_rate
    lines.append(f"  worker / bare loop (mean of both) = {ratio:.2f}")
    return lines, ratio


def bare_loop(count: int) -> BareRun:
    """The bare loop's seconds and CPU seconds, and what the machine used meanwhile."""
    edges: list[Usage] = []
    pids = {"bare loop": os.getpid(), "broker": broker_pid()}
    elapsed, cpu = asyncio.run(run_bare_loop(count, at_edges=lambda: edges.append(usage(pids))))
    return elapsed, cpu, usage_lines(edges[0], edges[-1], count)


def unlimited(scenario: Scenario, count: int, rounds: int) -> tuple[list[str], list[Run]]:
    """Bare loop, worker, bare loop, worker, ... bare loop: each worker run is held to
    the bare loop just before and just after it, as this machine's speed drifts from
    minute to minute; the median of the rounds' ratios is the figure."""
    lines = [f"{load_average()} at the start; {rounds} rounds"]
    bare_runs = [bare_loop(count)]
    results: list[Run] = []
    ratios = []
    for round_ in range(1, rounds + 1):
        results.append(run(scenario, count))
        bare_runs.append(bare_loop(count))
        round_lines, ratio = unlimited_lines(results[-1], bare_runs[-2:])
        lines += [f"round {round_}:", *round_lines]
        ratios.append(ratio)
    rates = [count / r.elapsed_s for r in results]
    cpu = [(r.cpu_s - r.cpu_at_first_s) / count * 1e6 for r in results]
    bare = [count / seconds for seconds, _, _ in bare_runs]
    lines += [
        f"worker messages/s: median {statistics.median(rates):.0f} "
        f"(min {min(rates):.0f}, max {max(rates):.0f}); bare loop messages/s: median "
        f"{statistics.median(bare):.0f} (min {min(bare):.0f}, max {max(bare):.0f})",
        f"worker CPU per message: median {statistics.median(cpu):.0f} us "
        f"(min {min(cpu):.0f}, max {max(cpu):.0f})",
        f"worker / bare loop: median {statistics.median(ratios):.2f} "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})",
    ]
    return lines, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=list(SCENARIOS))
    parser.add_argument("--count", type=int, help="commands (default per scenario)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="unlimited: worker runs, each between bare loops"
    )
    parser.add_argument(
        "--batch-charging",
        choices=["nested", "batch"],
        default="nested",
        help="what the sandbox charges a batch's operating time to",
    )
    args = parser.parse_args()
    name = args.scenario
    scenario = SCENARIOS[name]
    count = args.count or scenario.count
    lines = [f"scenario: {name}; {count} updates queued before the worker starts"]
    charging = args.batch_charging
    if charging != "nested":
        scenario = replace(scenario, sandbox=(*scenario.sandbox, "--batch-charging", charging))
        lines.append(f"the sandbox charges a batch as a whole ({charging!r}), not per command")
    if name == "unlimited":
        round_lines, results = unlimited(scenario, count, args.rounds)
        lines += round_lines
        result = results[-1]
        complete = all(r.complete for r in results)
        lines.append(f"every round complete: {'yes' if complete else 'NO'}; the last round:")
    elif name == "memory":
        lines.append(f"{load_average()} at the start")
        result = run(scenario, count)
        lines += [
            f"worker peak RSS (VmHWM), read just before it was stopped: "
            f"{result.peak_rss_mib:.1f} MiB",
            f"(the run took {result.elapsed_s:.2f} s: {count / result.elapsed_s:.0f} messages/s)",
        ]
        if result.usage_span is not None:
            lines += usage_lines(*result.usage_span, count)
        lines += gc_lines(result.gc_record)
    elif name == "operating":
        result = run(scenario, count, sample_charged=True)
        lines += operating_lines(result)
    elif name == "operating-fixed":
        result = run(scenario, count, sample_charged=True)
        lines += operating_lines(result, cost="0.2")
    else:
        result = run(scenario, count)
        lines += rate_lines(scenario, result)
    if name != "unlimited":
        complete = result.complete
    lines += outcome_lines(result)
    # A profiled run is slower: its figures are kept apart from the plain run's.
    profiled = (
        "-profiled" if os.environ.get("BENCH_PYSPY") or os.environ.get("BENCH_PROFILE") else ""
    )
    # Another collector setting is an experiment, kept apart as well.
    threshold = os.environ.get("BENCH_GC_THRESHOLD")
    if threshold and scenario.cpu_bound:
        lines.insert(1, f"experiment: the worker's gc thresholds set to {threshold}")
        profiled += "-gc" + threshold.replace(",", "_")
    write_results(f"worker_pacing-{name}{profiled}", lines)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
