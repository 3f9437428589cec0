"""Drift and reward-hacking alarms: a canary whose reward rose while it learned to emit broken
tool calls raises an alarm (version event, Prometheus) and is not promoted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from gateway.drift import behaviour, shifts, zero_weight
from ledger.bus import MemoryBus
from ledger.ids import new_id
from ledger.records import Score, Turn, TurnChoice
from tests.fixtures.upstream import gateway_settings, start_fake, start_gateway, stop_gateway


def _turn(version: str, episode: str, broken: bool, at: float) -> Turn:
    args = '{"path": "a.py"' if broken else '{"path": "a.py"}'
    call = {"id": "c1", "type": "function", "function": {"name": "edit", "arguments": args}}
    msg = {"role": "assistant", "content": "", "tool_calls": [call]}
    return Turn(
        id=new_id(),
        episode_id=episode,
        model="m",
        version=version,
        created_at=at,
        choices=[TurnChoice(message=msg)],
    )


def test_behaviour_metrics_of_a_turn() -> None:
    broken = _turn("v1", "e", True, 0.0).model_dump(mode="json")
    assert behaviour(broken)["tool_call_error"] == 1.0 and behaviour(broken)["question_back"] == 0.0
    asks = {"choices": [{"message": {"content": "Which file do you mean?"}, "logprobs": [-1.0, -3.0]}]}
    got = behaviour(asks)
    assert got["question_back"] == 1.0 and got["surprisal"] == 2.0 and got["answer_tokens"] == 5.0
    assert behaviour({"choices": [{"message": {"content": "I can't help with that."}}]})["refusal"] == 1.0
    assert zero_weight({"r": 1.0, "len": 3.0}, {"r": 1.0, "len": 0.0}, "code") == {"rubric:code/len": 3.0}
    same = shifts({"m": _timed([0.0, 1.0] * 20)}, {"m": _timed([1.0, 0.0] * 20)}, 4.0, 30)
    moved = shifts({"m": _timed([1.0] * 40)}, {"m": _timed([0.0] * 39 + [1.0])}, 4.0, 30)
    assert same == [] and [s.metric for s in moved] == ["m"]


def test_a_canary_that_breaks_tool_calls_alarms_and_is_not_promoted(tmp_path: Path) -> None:
    up, bus = start_fake(), MemoryBus()
    settings = gateway_settings(tmp_path, [up.url])
    settings.versions.min_episodes, settings.versions.alarm_min_samples = 10, 20
    settings.versions.block_promotion_on = ["tool_call_error"]
    gw = start_gateway(settings, bus)
    try:
        httpx.post(gw.root + "/admin/versions", json={"version": "v1", "adapter_path": "/tmp/v1"}, timeout=10)
        reg = gw.services.versions
        since = reg.versions["v1"].canary_since
        assert since is not None
        turns: list[tuple[str, bytes]] = []
        scores: list[tuple[str, bytes]] = []
        for i in range(40):
            for version, broken, reward in (("v1", i % 2 == 0, 1.0), ("base", False, 0.0 if i % 4 else 1.0)):
                eid = f"{version}-{i}"
                turns.append((eid, _turn(version, eid, broken, since + 1 + i).to_bytes()))
                s = Score(episode_id=eid, rubric="r", rubric_version="1", total=reward, version=version)
                scores.append((eid, s.to_bytes()))
        bus.publish("turns", turns)
        bus.publish("scores", scores)
        deadline = time.monotonic() + 15
        while not reg.versions["v1"].promotion_blocked:
            assert time.monotonic() < deadline, [e.event for e in reg.events]
            time.sleep(0.05)
        assert reg.serving == "base" and reg.canary == "v1"  # the reward rose; held back all the same
        alarm = next(e for e in reg.events if e.event == "alarm")
        assert alarm.figures["metric"] == "tool_call_error" and alarm.figures["canary_mean"] == 0.5
        assert (
            'rlgw_version_alarm{metric="tool_call_error",version="v1"} 1.0'
            in httpx.get(gw.root + "/metrics").text
        )
        listing: Any = httpx.get(gw.root + "/admin/versions").json()
        assert next(v for v in listing["versions"] if v["id"] == "v1")["alarms"] == ["tool_call_error"]
    finally:
        stop_gateway(gw)
        up.stop.set()


def test_constant_arms_are_not_an_alarm_of_astronomical_sigmas() -> None:
    # a constant metric (a fake replica's surprisal) whose float sums leave a variance of ~1e-34:
    # the all-equal rule applies, not a z of 1e14
    assert shifts({"s": _timed([0.601] * 120)}, {"s": _timed([0.581] * 120)}, sigmas=4.0, min_n=30) == []
    varied = [0.5 + 0.01 * (i % 3) for i in range(120)]
    (shift,) = shifts({"s": _timed([x + 0.2 for x in varied])}, {"s": _timed(varied)}, sigmas=4.0, min_n=30)
    assert shift.sigmas > 4.0 and shift.decided_n == 30  # decided at the first look it was allowed


def _timed(xs: list[float]) -> list[tuple[float, float]]:
    """Values as the side metrics hold them: (made at, value), one a second."""
    return [(float(i), x) for i, x in enumerate(xs)]


def test_looking_at_every_value_keeps_false_alarms_under_alpha() -> None:
    """A/A: one metric, equal versions, every value looked at; |z| > 2 at any look would alarm in
    about a third of the runs (benchmarks/drift_peeking.py), the sequence in under α = 4.6 %."""
    import random

    rng = random.Random(5)
    runs, alarms = 150, 0
    for _ in range(runs):
        c = [(2.0 * i, float(rng.random() < 0.3)) for i in range(300)]
        p = [(2.0 * i + 1, float(rng.random() < 0.3)) for i in range(300)]
        alarms += bool(shifts({"m": c}, {"m": p}, sigmas=2.0, min_n=30))
    assert alarms / runs <= 0.046, alarms
