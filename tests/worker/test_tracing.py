"""Tracing (the `otel` extra): a producer's trace goes on through the worker and out
with the outcome event, and the worker runs the same without OpenTelemetry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, running_sandbox
from tests.worker.broker import connected
from tests.worker.e2e import running_worker, settings_for
from worker import tracing
from worker.client import UpdateClient

pytestmark = [pytest.mark.rabbitmq, pytest.mark.sandbox]

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
async def portal() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(seed_items=5, limits_enabled=False)) as running:
        yield running


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The spans ended during the test. The tracer provider is the process's one: set
    once (OpenTelemetry allows no other), cleared around each test."""
    monkeypatch.setattr(tracing, "_decided", None)  # as in a process that never configured
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


async def test_a_producers_trace_runs_through_the_worker_to_the_outcome_event(
    amqp_url: str, portal: RunningSandbox, spans: InMemorySpanExporter
) -> None:
    settings = settings_for(amqp_url, portal)
    tracer = trace.get_tracer("a producer")
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology),
        UpdateClient(amqp_url, queue=settings.UPDATE_QUEUE) as client,
    ):
        with tracer.start_as_current_span("checkout", kind=SpanKind.PRODUCER) as producer:
            outcome = await client.update(2, 1, {"title": "traced"}, timeout_s=30)
            await client.update(2, 2, {"title": "traced too"}, timeout_s=30)
    assert outcome.status == "succeeded"
    trace_id = producer.get_span_context().trace_id
    ended = list(spans.get_finished_spans())
    processes = named(ended, "crm.item.update process")
    assert len(processes) == 2
    for process in processes:
        # The worker's span of each command is a child of the producer's span.
        assert process.context.trace_id == trace_id
        assert process.parent is not None
        assert process.parent.span_id == producer.get_span_context().span_id
        assert process.kind == SpanKind.CONSUMER
        assert process.attributes is not None
        assert process.attributes["b24.outcome"] == "succeeded"
        [validate] = [s for s in named(ended, "validate") if s.parent == process.context]
        [publish] = [s for s in named(ended, "publish outcome") if s.parent == process.context]
        assert validate.context.trace_id == publish.context.trace_id == trace_id
        assert publish.kind == SpanKind.PRODUCER
    # Each portal call is a span of its own, linked to the commands it carried, its
    # limiter wait inside it.
    calls = named(ended, "crm.item.update call")
    assert calls
    linked = {link.context.span_id for call in calls for link in call.links}
    assert {p.context.span_id for p in processes} <= linked
    for call in calls:
        assert call.kind == SpanKind.CLIENT
        [wait] = [s for s in named(ended, "limiter wait") if s.parent == call.context]
        assert call.start_time is not None
        assert wait.end_time is not None
        assert call.start_time <= wait.end_time


async def test_the_outcome_event_carries_the_trace_on(
    amqp_url: str, portal: RunningSandbox, spans: InMemorySpanExporter
) -> None:
    """The event's AMQP headers hold the context of its publish span, so whoever reads
    the outcome continues the producer's trace."""
    settings = settings_for(amqp_url, portal)
    tracer = trace.get_tracer("a producer")
    async with (
        running_worker(settings) as worker,
        connected(amqp_url, worker.topology) as broker,
    ):
        with tracer.start_as_current_span("nightly sync") as producer:
            async with UpdateClient(amqp_url, queue=settings.UPDATE_QUEUE) as client:
                await client.send(2, 3, {"title": "sent"})
        channel = await broker.channel()
        queue = await channel.get_queue(settings.RESULT_QUEUE)
        message = None
        for _ in range(300):
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None
    carried = propagate.extract({k: str(v) for k, v in (message.headers or {}).items()})
    context = trace.get_current_span(carried).get_span_context()
    assert context.trace_id == producer.get_span_context().trace_id
    [publish] = named(list(spans.get_finished_spans()), "publish outcome")
    assert context.span_id == publish.context.span_id


def test_without_opentelemetry_tracing_is_off_and_the_worker_imports() -> None:
    """Where the extra is not installed, nothing of OpenTelemetry is imported."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from worker import tracing\n"
        "import worker.runtime.app, worker.client\n"
        "assert tracing.AVAILABLE is False\n"
        "assert tracing.start_command({'traceparent': 'x'}) is None\n"
        "assert tracing.start_call([], waited_s=0.1, commands=1) is None\n"
        "headers = {}\n"
        "tracing.inject_current(headers)\n"
        "assert headers == {}\n"
        "assert not any(m.startswith('opentelemetry') for m in sys.modules)\n"
        "print('off')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "off"


def test_installed_but_not_configured_nothing_of_it_is_imported() -> None:
    """The extra installed, no exporter named and no provider set: the worker and the
    client import nothing of OpenTelemetry, make no span and inject nothing."""
    script = (
        "import sys\n"
        "from worker import tracing\n"
        "import worker.runtime.app, worker.client\n"
        "tracing.configure()\n"
        "assert tracing.AVAILABLE is True\n"
        "assert tracing.start_command({'traceparent': 'x'}) is None\n"
        "headers = {}\n"
        "tracing.inject_current(headers)\n"
        "assert headers == {}\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_the_standard_variables_choose_the_exporter() -> None:
    """OTEL_TRACES_EXPORTER=console: the worker's spans come out on stdout, named by
    OTEL_SERVICE_NAME; `none` exports nothing and makes no span."""
    script = (
        "from worker import tracing\n"
        "tracing.configure()\n"
        "span = tracing.start_command({'traceparent': "
        "'00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'})\n"
        "print('made' if span is not None else 'none')\n"
        "tracing.end(span, outcome='succeeded')\n"
        "tracing.shutdown()\n"
    )

    def run(exporter: str) -> str:
        env = {**os.environ, "OTEL_TRACES_EXPORTER": exporter, "OTEL_SERVICE_NAME": "crm-sync"}
        ran = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=True,
        )
        return ran.stdout

    exported = run("console")
    assert "\nmade\n" in exported
    assert '"name": "crm.item.update process"' in exported
    assert '"trace_id": "0x0af7651916cd43dd8448eb211c80319c"' in exported
    assert '"service.name": "crm-sync"' in exported
    assert run("none").strip() == "none"
