"""Where a py-spy recording of the worker spent its samples.

    BENCH_PYSPY=/tmp/worker.spy BENCH_PYSPY_S=12 \\
        python bench/worker_pacing.py unlimited --count 40000
    python bench/profile_report.py /tmp/worker.spy [--name profile-unlimited] [--top 25]

Reads py-spy's collapsed stacks (``record --format raw --nolineno``: one line
per distinct stack, ``outer;...;inner count``) and prints, as shares of all
samples of the busy thread (py-spy leaves idle samples out):

- by stage: what the event loop was running (the frame right under it),
  named after the worker's stages;
- named costs: chosen functions with everything they call, wherever they
  are called from (the garbage collector and system calls appear only in a
  ``BENCH_PYSPY_NATIVE=1`` recording);
- self time: the innermost frame of each sample, by function and by where
  the code lives (``worker/outcomes.py``, ``aiormq``, ``asyncio``...).

The garbage collector runs inside whatever allocation set it off, so without
native frames its time hides in the self time of allocating functions.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_results

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")
PROJECT = ("worker/", "schemas/")
LOOP = "Runner.run (asyncio/runners.py)"

# The frame right under the event loop names what a sample was doing.
STAGES = {
    "Consumers._consume.<locals>.on_message (worker/amqp/consumer.py)": (
        "a delivery: decode, validate, ordering gate, field check, encode"
    ),
    "Pipeline._send (worker/flow/pipeline.py)": (
        "a call: batch request, answer, classify; then settling: event, log line, metrics, gate"
    ),
    "Pipeline.run (worker/flow/pipeline.py)": "forming batches, the limiter's leave",
    "Publisher._send (worker/amqp/publishing.py)": "events written to the broker",
    "Connection.__reader (aiormq/connection.py)": "AMQP frames read from the socket",
    "Channel._reader (aiormq/channel.py)": "AMQP frames dispatched (deliveries, confirms)",
    "Connection.__writer (aiormq/connection.py)": "AMQP frames written to the socket",
}
NAMED = {
    "gc_collect_main": "the garbage collector (native frames only)",
    "BitrixClient._send (worker/bitrix/client.py)": "HTTP exchange with the portal (httpx)",
    "read_envelope (worker/bitrix/envelope.py)": "reading the portal's answer (orjson)",
    "Channel._on_deliver_frame (aiormq/channel.py)": "deliveries parsed by the AMQP client",
    "Channel._on_confirm_frame (aiormq/channel.py)": "publisher confirms handled",
    "Job.decode (worker/flow/jobs.py)": "decode + validate (schemas.parse_command)",
    "FieldDefinitions.check (worker/flow/definitions.py)": (
        "custom fields checked against definitions"
    ),
    "php_query (worker/bitrix/encoding.py)": "the batch query string of a command",
    "Outcomes._publish_success (worker/flow/outcomes.py)": "success event built and handed over",
    "_Event.to_json (schemas/events.py)": "  of which the event's JSON (pydantic)",
    "MetricsObserver.settled (worker/observability/observer.py)": (
        "the settled log line and metrics"
    ),
    "BytesLogger.msg (structlog/_output.py)": "  of which writing the log line",
    "current_async_library (httpcore/_synchronization.py)": (
        "httpcore's per-call library check (a failing import of sniffio)"
    ),
    "_find_and_load (<frozen importlib._bootstrap>)": "imports attempted at run time",
    "getpid": "getpid system calls (asyncio.get_running_loop and friends)",
}


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def where(frame: str) -> str:
    """``worker/flow/outcomes.py`` for the project's own code, else the top-level package."""
    match = FRAME.match(frame)
    if match is None:
        return frame
    file = match["file"]
    if file.startswith(PROJECT):
        return file
    if "/" not in file:
        return file.removesuffix(".py")
    return file.split("/", 1)[0]


def stage(frames: list[str]) -> str:
    if LOOP not in frames:
        return "(stack cut short by non-blocking sampling)"
    # Native frames (uvloop's loop.c, the interpreter) sit between the loop and the callback.
    below = [f for f in frames[frames.index(LOOP) + 1 :] if _python(f)]
    if not below:
        return "the event loop itself (uvloop's C code: polling, callbacks, transports)"
    return STAGES.get(below[0], f"other: {below[0]}")


def _python(frame: str) -> bool:
    match = FRAME.match(frame)
    return match is not None and match["file"].endswith((".py", ">"))


def table(title: str, counts: Counter[str], total: int, top: int) -> list[str]:
    lines = [f"{title} (share of {total} samples):"]
    for name, count in counts.most_common(top):
        lines.append(f"  {count / total:6.1%}  {name}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", type=Path)
    parser.add_argument("--name", default="profile-unlimited", help="results file name")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stacks = parse(args.recording)
    total = sum(count for _, count in stacks)
    if not total:
        raise SystemExit(f"no samples in {args.recording}")
    stages: Counter[str] = Counter()
    named: Counter[str] = Counter()
    own: Counter[str] = Counter()
    code: Counter[str] = Counter()
    for frames, count in stacks:
        stages[stage(frames)] += count
        for key, label in NAMED.items():
            if any(frame == key or frame.startswith(key + " (") for frame in frames):
                named[label] += count
        own[frames[-1]] += count
        code[where(frames[-1])] += count
    ordered_named = [f"  {named[label] / total:6.1%}  {label}" for label in NAMED.values()]
    lines = [
        f"recording: {args.recording} ({total} samples of the busy thread)",
        *table("by stage", stages, total, args.top),
        f"named costs, with what they call (share of {total} samples):",
        *ordered_named,
        *table("self time by function", own, total, args.top),
        *table("self time by code", code, total, args.top),
    ]
    write_results(args.name, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
