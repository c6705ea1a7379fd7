"""Tracing with OpenTelemetry, when it is installed (`pip install b24-update-worker[otel]`).

A producer's trace continues through the worker and back out with the outcome:

    crm.item.update process   (consumer)  child of the W3C traceparent/tracestate
                                          the command's AMQP headers carry
      validate                            its decoding and validation
      publish outcome         (producer)  the event, whose headers carry this
                                          span's context on to its reader
    crm.item.update call      (client)    one per portal call (a batch carries
                                          many commands): linked to each of their
                                          process spans
      limiter wait                        the wait for the portal's bucket and budget

Configured by the standard variables: `OTEL_TRACES_EXPORTER` (`otlp`, `console`,
any exporter installed under its entry point; `none` or unset: no export),
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
`OTEL_EXPORTER_OTLP_*`, `OTEL_SDK_DISABLED`. Without OpenTelemetry installed every
function here returns at once and nothing else is imported: off and free; installed
but with no tracer provider set (no exporter named), no span is made and
nothing of it is imported either, unless the process imported it itself (a host
application that traces, or auto-instrumentation). The producer's side
(`UpdateClient`, `b24-worker publish`) injects the context of the span current
where it publishes.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from types import SimpleNamespace
from typing import Any

import structlog

__all__ = [
    "AVAILABLE",
    "child",
    "configure",
    "end",
    "inject",
    "inject_current",
    "shutdown",
    "start_call",
    "start_command",
]

log = structlog.get_logger("worker.tracing")


def _installed() -> bool:
    """Whether the `otel` extra is there (and not disabled), found without importing it:
    importing the API and its propagators costs every start 10-20 ms."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False


AVAILABLE = _installed()


@functools.cache
def _api() -> Any:
    """OpenTelemetry's API, imported at its first use and kept for the calls after it."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, StatusCode

    return SimpleNamespace(
        propagate=propagate, trace=trace, Link=Link, SpanKind=SpanKind, StatusCode=StatusCode
    )


Span = Any  # opentelemetry.trace.Span when it is installed; None otherwise
_NAME = "b24-update-worker"
_provider: Any = None
_decided: bool | None = None  # set by `configure`: the worker's process traces, or not


def configure() -> None:
    """At the worker's start: an SDK tracer provider exporting as OTEL_TRACES_EXPORTER
    says, when opentelemetry-sdk is installed and no provider was set before."""
    global _provider, _decided
    exporters = [
        name.strip()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip() and name.strip() != "none"
    ]
    if not AVAILABLE or not exporters:
        # A provider set before (auto-instrumentation) is used; none is asked for again.
        _decided = _on()
        return
    try:
        from importlib.metadata import entry_points

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing.no_sdk", note="opentelemetry-sdk is not installed: nothing exported")
        _decided = _on()
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", _NAME)})
    provider = TracerProvider(resource=resource)
    found = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    for name in exporters:
        if name not in found:
            log.warning("tracing.unknown_exporter", exporter=name, known=sorted(found))
            continue
        provider.add_span_processor(BatchSpanProcessor(found[name].load()()))
    _api().trace.set_tracer_provider(provider)
    _provider = provider
    _decided = True
    log.info("tracing.configured", exporters=exporters)


def shutdown() -> None:
    """At the worker's end: what is still buffered is exported."""
    if _provider is not None:
        _provider.shutdown()


def _on() -> bool:
    """A tracer provider is set (by `configure`, the SDK's auto-instrumentation, or the
    host application): until then no span is made, so an installed but unconfigured
    OpenTelemetry costs the worker next to nothing either. Once `configure` has run
    (`b24-worker run`), its answer stands."""
    if _decided is not None:
        return _decided
    if not _imported():
        return False
    trace = _api().trace
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _imported() -> bool:
    """Whether anything in this process imported OpenTelemetry's tracing API: no
    provider can be set, and no span be current, before that."""
    return AVAILABLE and "opentelemetry.trace" in sys.modules


_cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)


def _tracer() -> Any:
    """The worker's tracer of the provider set now, made once per provider (getting one
    costs more than a span)."""
    global _cached
    provider = _api().trace.get_tracer_provider()
    if _cached[0] is not provider:
        from worker import __version__

        _cached = (provider, provider.get_tracer(_NAME, __version__))
    return _cached[1]


def start_command(headers: Mapping[str, Any], name: str = "crm.item.update process") -> Span:
    """The span of a command taken from the broker, in the trace its headers name."""
    if not _on():
        return None
    otel = _api()
    parent = otel.propagate.extract(_text_headers(headers))
    return _tracer().start_span(name, context=parent, kind=otel.SpanKind.CONSUMER)


def child(parent: Span, name: str, *, producer: bool = False) -> Span:
    """A span under ``parent`` (None when tracing is off, or the parent is)."""
    if parent is None:
        return None
    otel = _api()
    kind = otel.SpanKind.PRODUCER if producer else otel.SpanKind.INTERNAL
    return _tracer().start_span(name, context=otel.trace.set_span_in_context(parent), kind=kind)


def end(span: Span, *, error: str | None = None, **attributes: Any) -> None:
    if span is None:
        return
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(f"b24.{key}", value)
    if error is not None:
        span.set_status(_api().StatusCode.ERROR, error)
    span.end()


def start_call(command_spans: Iterable[Span], *, waited_s: float, commands: int) -> Span:
    """The span of one portal call, linked to the spans of the commands it carries; its
    first part is the wait for the limiter's leave, which ended just now."""
    if not _on():
        return None
    otel = _api()
    trace = otel.trace
    links = [otel.Link(span.get_span_context()) for span in command_spans if span is not None]
    now = time.time_ns()
    started = now - int(waited_s * 1e9)
    tracer = _tracer()
    call = tracer.start_span(
        "crm.item.update call",
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=otel.SpanKind.CLIENT,
        links=links,
        start_time=started,
        attributes={"b24.commands": commands},
    )
    wait = tracer.start_span(
        "limiter wait", context=trace.set_span_in_context(call), start_time=started
    )
    wait.end(end_time=now)
    return call


def inject(span: Span, headers: MutableMapping[str, Any]) -> None:
    """``span``'s context into AMQP headers (traceparent, tracestate)."""
    if span is not None:
        otel = _api()
        otel.propagate.inject(headers, context=otel.trace.set_span_in_context(span))


def inject_current(headers: MutableMapping[str, Any]) -> None:
    """The context current where a producer publishes into the message's headers."""
    if _imported():
        _api().propagate.inject(headers)


def _text_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    text = {}
    for name, value in headers.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            text[name] = value
    return text
