"""OpenTelemetry: one span per request, exported to OTLP, the console, or nowhere."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from ledger.config import TelemetryConfig


def setup_tracing(cfg: TelemetryConfig, service: str = "rlgw-gateway") -> trace.Tracer | None:
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
