"""Traces link request → turn → score → training step → version through the ids records carry.

Real pieces: a live gateway (uvicorn) on a fake replica recording to the memory bus, a rubric
worker on that bus, and the learner on the tiny model publishing over HTTP to the gateway.
One OTel SDK provider with the in-memory exporter traces all three.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from openai import OpenAI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext

from learner.config import LearnerConfig
from learner.loop import run_learner
from learner.publish import HttpPublisher
from ledger.reads import MemoryScoredEpisodes
from ledger.records import Episode, ModelVersion, Score, Turn, parse_record
from ledger.tracing import link_to
from rewards import Rubric, reward
from rewards.worker import RubricWorker
from rlgw.config import Settings
from tests.fixtures.upstream import FakeServer, gateway_settings, start_gateway, stop_gateway

EPISODES = 4


@reward(weight=1.0)
def answered(episode: Any) -> float:
    return float(bool(episode.final_answer))


def spans_by(exporter: InMemorySpanExporter, name: str, key: str) -> dict[str, ReadableSpan]:
    """The finished spans called `name`, by their `key` attribute."""
    return {str((s.attributes or {}).get(key)): s for s in exporter.get_finished_spans() if s.name == name}


def context_of(traceparent: str | None) -> SpanContext:
    link = link_to(traceparent)
    assert link is not None, traceparent
    return link.context


def linked(span: ReadableSpan) -> dict[int, dict[str, Any]]:
    """span id -> attributes of each link of `span`."""
    return {link.context.span_id: dict(link.attributes or {}) for link in span.links}


def records(bus: Any, topic: str) -> list[Any]:
    return [parse_record(m.value) for m in bus.messages(topic)]


def test_a_trained_version_traces_back_to_its_requests(
    tmp_path: Path, fake_upstream: FakeServer, tiny_model_dir: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    gw = start_gateway(gateway_settings(tmp_path / "gw", [fake_upstream.url]), tracer=tracer)
    try:
        # request → turn
        client = OpenAI(base_url=gw.url, api_key="x", max_retries=0)
        for i in range(EPISODES):
            client.chat.completions.create(
                model="rlgw",
                messages=[{"role": "user", "content": f"hello {i}"}],
                extra_headers={"X-Episode-Id": f"ep{i}", "X-Episode-End": "true"},
            )
        client.close()
        assert gw.services.recorder.flush()
        turns = [r for r in records(gw.bus, "turns") if isinstance(r, Turn)]
        requests = spans_by(exporter, "chat.completions", "rlgw.turn_id")
        assert len(turns) == EPISODES and sorted(requests) == sorted(t.id for t in turns)
        for t in turns:
            assert context_of(t.traceparent).span_id == requests[t.id].context.span_id

        # turn → score: the score span links to its turn's request span, the Score names the span
        worker = RubricWorker([Rubric("r", [answered])], gw.bus, tracer=tracer)
        asyncio.run(worker.step(timeout_s=0.1))
        worker.close()
        scores = [r for r in records(gw.bus, "scores") if isinstance(r, Score)]
        score_spans = spans_by(exporter, "rubric.score", "rlgw.score_id")
        assert len(scores) == EPISODES and sorted(score_spans) == sorted(s.id for s in scores)
        turn_of = {t.episode_id: t for t in turns}
        for s in scores:
            span = score_spans[s.id]
            assert context_of(s.traceparent).span_id == span.context.span_id
            turn = turn_of[s.episode_id]
            assert linked(span)[requests[turn.id].context.span_id] == {"rlgw.turn_id": turn.id}

        # score → training step → version, published over HTTP to the gateway
        reader = MemoryScoredEpisodes()
        for s in scores:
            reader.add(s, Episode(episode_id=s.episode_id, turns=[turn_of[s.episode_id]]))
        learner = LearnerConfig(
            device="cpu", batch_episodes=EPISODES, steps_per_version=1, poll_interval_s=0.01
        )
        settings = Settings(data_dir=tmp_path / "learner", learner=learner)
        publisher = HttpPublisher(gw.root, None, retries=2)
        report = run_learner(
            settings,
            reader,
            publisher,
            threading.Event(),
            model_dir=tiny_model_dir,
            max_versions=1,
            tracer=tracer,
        )
        publisher.close()
        assert gw.services.recorder.flush()
    finally:
        stop_gateway(gw)

    (version,) = report.versions
    (step,) = spans_by(exporter, "learner.step", "rlgw.step").values()
    version_span = spans_by(exporter, "learner.version", "rlgw.version")[version]
    # the step trained on every score and its turn: linked to both spans, by id
    links = linked(step)
    for s in scores:
        turn = turn_of[s.episode_id]
        assert links[score_spans[s.id].context.span_id] == {"rlgw.score_id": s.id}
        assert links[requests[turn.id].context.span_id] == {"rlgw.turn_id": turn.id}
    # the step is the version's child, and the version's records carry that trace
    assert step.parent is not None and step.parent.span_id == version_span.context.span_id
    assert step.context.trace_id == version_span.context.trace_id
    events = [r for r in records(gw.bus, "versions") if isinstance(r, ModelVersion) and r.version == version]
    assert {e.event for e in events} >= {"registered", "loaded"}
    for e in events:
        assert context_of(e.traceparent).trace_id == step.context.trace_id
        assert context_of(e.traceparent).span_id == version_span.context.span_id
