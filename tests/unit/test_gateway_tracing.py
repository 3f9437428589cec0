"""One span per chat request, carrying the episode, turn and version ids."""

from __future__ import annotations

from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import setup_gateway
from ledger.bus import MemoryBus
from ledger.recorder import Recorder
from tests.fixtures.upstream import FakeServer, gateway_settings


async def test_span_per_request(tmp_path: Path, fake_upstream: FakeServer) -> None:
    settings = gateway_settings(tmp_path, [fake_upstream.url], base_model="fake-base")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = Recorder(MemoryBus()).start()
    app = setup_gateway(settings, recorder=recorder, tracer=provider.get_tracer("test"))
    svc = app.services
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        resp = await client.post(
            "/v1/chat/completions",
            json={"model": "rlgw", "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Episode-Id": "ep-t"},
        )
    await svc.pool.close()
    recorder.close()
    assert resp.status_code == 200
    [span] = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs["rlgw.episode_id"] == "ep-t" and attrs["rlgw.version"] == "base"
    assert attrs["rlgw.turn_id"] == resp.headers["x-turn-id"]
