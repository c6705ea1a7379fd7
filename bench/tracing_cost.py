"""What tracing costs the worker's hot path per command, in CPU microseconds.

    python bench/tracing_cost.py

The calls the worker makes for one command that goes alone in a call (its
process span from the headers' traceparent, validate, the call span with its
limiter wait, publish outcome with the context injected, the end), timed with
timeit, best of three, in three processes: OpenTelemetry installed but no tracer
provider set (the worker's default: no span is made), an SDK provider that
records every span and exports nothing, and the same with the call span left
out (a call carries up to 50 commands, so its share per command is small).
Figures of one core, with whatever else the machine runs; a microbenchmark of
the hooks alone, not of the worker.

Adds the figures to bench/results/tracing_cost.txt.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_results

PROBE = """
import os
os.environ.pop("OTEL_TRACES_EXPORTER", None)
import sys, timeit
from worker import tracing
mode = sys.argv[1]
if mode == "unconfigured":
    tracing.configure()  # as `b24-worker run` does: no OTEL_TRACES_EXPORTER, nothing set
else:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

def one() -> None:
    span = tracing.start_command(headers)
    validating = tracing.child(span, "validate")
    tracing.end(validating)
    if mode != "sdk-without-call":
        tracing.end(tracing.start_call([span], waited_s=0.1, commands=1))
    publishing = tracing.child(span, "publish outcome", producer=True)
    tracing.inject(publishing, {})
    tracing.end(publishing)
    tracing.end(span, outcome="succeeded", attempts=1)

n = 20000
print(f"{min(timeit.repeat(one, number=n, repeat=3)) / n * 1e6:.1f}")
"""

MODES = {
    "unconfigured": "OpenTelemetry installed, no tracer provider (the default)",
    "sdk": "SDK provider recording every span, no exporter",
    "sdk-without-call": "the same, the call span left out",
}


def main() -> int:
    lines = []
    for mode, what in MODES.items():
        ran = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        line = f"{what}: {ran.stdout.strip()} us per command"
        print(line, flush=True)
        lines.append(line)
    write_results("tracing_cost", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
