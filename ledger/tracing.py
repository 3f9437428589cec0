"""OpenTelemetry: each process's tracer, and the trace context that records carry across processes.

A record's `traceparent` (ledger.records) is the W3C trace-context value of the span that made
it, so a span in another process, started later, can link to it through the ids alone:

    span              process   ids (attributes)                            links / parent
    chat.completions  gateway   rlgw.episode_id, rlgw.turn_id, rlgw.version  -> Turn.traceparent
    rubric.score      worker    rlgw.score_id, rlgw.episode_id, rlgw.rubric  links: its turns' requests
                                                                            -> Score.traceparent
    learner.version   learner   rlgw.version, rlgw.steps                     -> ModelVersion.traceparent
    learner.step      learner   rlgw.step, rlgw.samples                      parent: learner.version;
                                                                            links: the scores trained
                                                                            on and their turns

Traces off (`telemetry.traces = "none"`): no tracer, no spans, records carry no traceparent.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ledger.config import TelemetryConfig

MAX_LINKS = 64
"""Links one span carries at most (a training step trains on hundreds of turns)."""

_w3c = TraceContextTextMapPropagator()


def setup_tracing(cfg: TelemetryConfig, service: str) -> trace.Tracer | None:
    """A tracer for `service`, or None when traces are off (no cost on the request path)."""
    if cfg.traces == "none":
        return None
    exporter: SpanExporter
    if cfg.traces == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=cfg.otlp_endpoint) if cfg.otlp_endpoint else OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("rlgw")


def traceparent(span: Span | None = None) -> str | None:
    """The W3C traceparent of `span` (default: the current one); None without a valid span."""
    span = span or trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _w3c.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def link_to(value: str | None, **ids: str) -> Link | None:
    """A link to the span a record's traceparent names, carrying the record's ids."""
    if not value:
        return None
    context = trace.get_current_span(_w3c.extract({"traceparent": value})).get_span_context()
    return Link(context, ids) if context.is_valid else None


def links(targets: Iterable[tuple[str | None, dict[str, str]]], limit: int = MAX_LINKS) -> list[Link]:
    """Links to (traceparent, ids) targets, the first `limit` valid ones."""
    out: list[Link] = []
    for value, ids in targets:
        if len(out) >= limit:
            break
        if (found := link_to(value, **ids)) is not None:
            out.append(found)
    return out
