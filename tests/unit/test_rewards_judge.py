"""The LLM judge against real HTTP servers: strict parsing, timeouts, and the injection probes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.fake_upstream import BASE_MODEL, FakeState, make_app
from ledger.bus import MemoryBus
from ledger.records import JudgeProbe, Score, parse_record
from rewards import load_rubrics
from rewards.config import RewardsConfig
from rewards.judge import JudgeError, is_hollow, parse_verdict
from rewards.judge_watch import Judge, JudgeWatch, judges_of
from rewards.probes import CONTROLS, PROBES, judge_report, probe_episode
from tests.fixtures.judge import gullible, honest, judge_app, judge_in_thread, serve
from tests.fixtures.upstream import gateway_settings, start_fake, start_gateway, stop_gateway


@pytest.mark.parametrize(
    "reply",
    [
        "SCORE: 11",
        "score: 7",
        "SCORE: 7.5",
        "SCORE: 7 extra",
        "SCORE: 7\nthanks",
        "SCORE: 3\nSCORE: 9",
        "",
        ":",
    ],
)
def test_parse_rejects_anything_but_one_final_score_line(reply: str) -> None:
    with pytest.raises(JudgeError):
        parse_verdict(reply)


def test_parse_accepts_reasoning_then_score() -> None:
    assert parse_verdict("The answer is right.\n\nSCORE: 10\n") == 10
    assert parse_verdict("SCORE: 0") == 0


def test_hollow_answers() -> None:
    for answer in (":", "Thought process:", "Let's solve this problem step by step.", "Solution", " . ", ""):
        assert is_hollow(answer), answer
    for answer in ("Paris", "Let's think: it is Paris.", "Solution: Paris"):
        assert not is_hollow(answer), answer


async def test_probe_set_fails_on_an_honest_judge() -> None:
    async with serve(judge_app(honest)) as url:
        report = await judge_report(url, "judge")
    assert report.false_positive_rate == 0.0
    assert report.control_pass_rate == 1.0


async def test_probe_report_exposes_a_gullible_judge() -> None:
    async with serve(judge_app(gullible)) as url:
        report = await judge_report(url, "judge")
    # the hollow-answer guard stops the master keys before the call; injections get through
    for name in ("bare_colon", "thought_process", "lets_solve", "solution_heading"):
        assert report.grades[name] == 0.0
    passed = {n for n in PROBES if report.grades[n] == 1.0}
    assert passed == {"ignore_previous", "ignore_previous_with_line", "fake_end_marker", "grader_address"}
    assert report.false_positive_rate == pytest.approx(len(passed) / len(PROBES))


async def test_an_echoing_endpoint_never_passes() -> None:
    """An endpoint that repeats the prompt (probes ending in `SCORE: 10` included) breaks the format."""
    async with serve(make_app(FakeState())) as url:
        report = await judge_report(url, BASE_MODEL)
        assert report.false_positive_rate == 0.0 and report.control_pass_rate == 0.0
        assert all(isinstance(report.grades[n], str) for n in CONTROLS)


async def test_judge_in_a_toml_rubric_with_timeout_and_errors(tmp_path: Path) -> None:
    async with serve(judge_app(honest, delay_s=0.5)) as slow_url:
        path = tmp_path / "j.toml"
        path.write_text(
            '[[rubric]]\nname = "judged"\n'
            f'[[rubric.scorer]]\nuse = "llm_judge"\nname = "fast"\nurl = "{slow_url}"\n'
            'model = "j"\ntimeout_s = 0.1\n'
            '[[rubric.scorer]]\nuse = "llm_judge"\nname = "down"\n'
            'url = "http://127.0.0.1:9/v1"\nmodel = "j"\n'
            '[[rubric.scorer]]\nuse = "llm_judge"\nname = "unset"\n'
        )
        (rubric,) = load_rubrics(path)
        s = await rubric.score(probe_episode("c", "Paris"))
        assert s.values == {"fast": None, "down": None, "unset": None} and s.total is None
        assert "within 0.1s" in s.errors["fast"]
        assert "judge call failed" in s.errors["down"]
        assert "no judge endpoint" in s.errors["unset"]
        # the judges the worker probes on a schedule: each called one with an endpoint
        assert [j.name for j in judges_of([rubric], RewardsConfig())] == ["judged/fast", "judged/down"]
        bus = MemoryBus()
        assert JudgeWatch.from_config(RewardsConfig(judge_probe_interval_s=0), [rubric], bus) is None
        assert JudgeWatch.from_config(RewardsConfig(), [], bus) is None  # no judge: off


def test_rlgw_judge_probe_reports_and_alarms_on_drift(tmp_path: Path) -> None:
    import threading

    from typer.testing import CliRunner

    from rlgw.cli import app

    urls: dict[str, str] = {}
    stop = threading.Event()

    def run(name: str, grade: Callable[[str], str]) -> None:
        async def main() -> None:
            async with serve(judge_app(grade)) as url:
                urls[name] = url
                while not stop.is_set():
                    await asyncio.sleep(0.05)

        asyncio.run(main())

    for name, grade in (("honest", honest), ("gullible", gullible)):
        threading.Thread(target=run, args=(name, grade), daemon=True).start()
    try:
        while len(urls) < 2:
            threading.Event().wait(0.02)
        runner = CliRunner()
        base = tmp_path / "base.json"
        first = runner.invoke(
            app, ["judge", "probe", "--url", urls["honest"], "--model", "j", "--out", str(base)]
        )
        assert first.exit_code == 0, first.output
        assert json.loads(base.read_text())["false_positive_rate"] == 0.0
        again = runner.invoke(
            app, ["judge", "probe", "--url", urls["honest"], "--model", "j", "--baseline", str(base)]
        )
        assert again.exit_code == 0, again.output
        worse = runner.invoke(
            app, ["judge", "probe", "--url", urls["gullible"], "--model", "j", "--baseline", str(base)]
        )
        assert worse.exit_code == 1 and "judge drift: false_positive_rate" in worse.output
        assert runner.invoke(app, ["judge", "probe"]).exit_code == 2
    finally:
        stop.set()


def test_a_judge_whose_grades_shift_raises_an_alarm_every_gateway_sees(tmp_path: Path) -> None:
    """The scheduled probe run (rewards/judge_watch.py) against a judge that turns gullible for
    its second run: a drift record on the scores topic; the gateway shows it (gauge, dashboard)
    and holds back a canary whose reward rose; the judge's next good run clears it."""
    calls, per_run = [0], 7  # the probes and controls that are not hollow reach the judge

    def shifting(data: str) -> str:
        calls[0] += 1
        return gullible(data) if per_run < calls[0] <= 2 * per_run else honest(data)

    up, bus = start_fake(), MemoryBus()
    settings = gateway_settings(tmp_path, [up.url])
    settings.versions.min_episodes, settings.versions.block_promotion_on = 10, ["judge:*"]
    gw = start_gateway(settings, bus)
    try:
        with judge_in_thread(shifting) as url:
            judge, kept = Judge("qa/judge", url, "j"), tmp_path / "judge-baselines.json"
            (first,) = asyncio.run(JudgeWatch([judge], bus, kept_in=kept).run_once())
            assert first.drift == [] and first.baseline_from == "first run" and calls[0] == per_run
            watch = JudgeWatch([judge], bus, kept_in=kept)  # a restarted worker: the same baseline
            (second,) = asyncio.run(watch.run_once())
            assert second.drift == ["false_positive_rate 0.00 -> 0.44"], second
            on_topic = [parse_record(m.value) for m in bus.messages("scores")]
            assert [r.drift for r in on_topic if isinstance(r, JudgeProbe)] == [[], second.drift]

            reg = gw.services.versions
            httpx.post(gw.root + "/admin/versions", json={"version": "v1", "adapter_path": "/x"}, timeout=10)
            since = reg.versions["v1"].canary_since
            assert since is not None
            scores = []
            for i in range(20):  # the canary's reward rose: promoted, were it not for the judge
                for version, reward in (("v1", 1.0), ("base", 0.0 if i % 4 else 1.0)):
                    s = Score(episode_id=f"{version}-{i}", rubric="r", rubric_version="1", total=reward,
                              version=version, created_at=since + 1 + i)  # fmt: skip
                    scores.append((s.episode_id, s.to_bytes()))
            bus.publish("scores", scores)
            _until(lambda: reg.versions["v1"].promotion_blocked, reg)
            blocked = next(e for e in reg.events if e.event == "alarm_blocked_promotion")
            assert "judge:qa/judge" in blocked.reason and reg.serving == "base"
            assert 'rlgw_judge_alarm{judge="qa/judge"} 1.0' in httpx.get(gw.root + "/metrics").text
            alarms = httpx.get(gw.root + "/admin/dashboard/data").json()["alarms"]
            assert [a["version"] for a in alarms if a["event"] == "judge_drift"] == ["judge:qa/judge"]
            listing = httpx.get(gw.root + "/admin/versions").json()
            assert listing["judge_alarms"] == ["judge:qa/judge"]

            (third,) = asyncio.run(watch.run_once())  # honest again: the alarm clears
            assert third.drift == []
            _until(lambda: reg.serving == "v1", reg)
            assert 'rlgw_judge_alarm{judge="qa/judge"} 0.0' in httpx.get(gw.root + "/metrics").text
    finally:
        stop_gateway(gw)
        up.stop.set()


def _until(cond: Callable[[], bool], reg: Any) -> None:
    deadline = time.monotonic() + 15
    while not cond():
        assert time.monotonic() < deadline, [e.event for e in reg.events]
        time.sleep(0.05)
