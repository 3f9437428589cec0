"""Exploration groups: k completions asked, one returned, all recorded as a group."""

from __future__ import annotations

from pathlib import Path

import openai

from ledger.records import EpisodeEnd, Turn, parse_record
from tests.fixtures.upstream import FakeServer, gateway_settings, start_gateway, stop_gateway


def test_exploration_group_returns_one_and_records_k(tmp_path: Path, fake_upstream: FakeServer) -> None:
    settings = gateway_settings(
        tmp_path, [fake_upstream.url], exploration_share=1.0, exploration_k=3, exploration_tasks=["geo"]
    )
    gw = start_gateway(settings)
    try:
        c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="rlgw", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Task": "geo"}
        )
        reply = raw.parse()
        assert len(reply.choices) == 1 and reply.choices[0].message.content == "echo[fake-base#0]: hi"
        assert reply.usage is not None and reply.usage.completion_tokens == len(b"echo[fake-base#0]: hi")
        assert fake_upstream.state.requests[-1]["n"] == 3
        c.chat.completions.create(model="rlgw", messages=[{"role": "user", "content": "x"}])  # not eligible
        assert fake_upstream.state.requests[-1].get("n") is None
        gw.services.recorder.flush(5)
        recs = [parse_record(m.value) for m in gw.bus.messages("turns")]
        turns = [r for r in recs if isinstance(r, Turn)]
        episode = raw.headers["x-episode-id"]
        group = [t for t in turns if t.group_id is not None]
        assert len(group) == 3 and len({t.group_id for t in group}) == 1
        assert [t.episode_id for t in group] == [episode, f"{episode}~x1", f"{episode}~x2"]
        assert [t.choices[0].message["content"] for t in group][1:] == [
            "echo[fake-base#1]: hi",
            "echo[fake-base#2]: hi",
        ]
        assert all(t.tokens_recorded for t in group) and group[1].metadata["exploration_of"] == episode
        ends = {r.episode_id for r in recs if isinstance(r, EpisodeEnd)}
        assert ends == {f"{episode}~x1", f"{episode}~x2"}  # the client's own episode stays open
    finally:
        stop_gateway(gw)
