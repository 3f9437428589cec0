"""The learner's step figures: made from StepStats, carried in a version's data window, summarised
per version, and served by the dashboard's data route with alarms and eval-gate results."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from gateway.config import VersionsConfig
from gateway.dashboard_data import snapshot
from gateway.versions import VersionRegistry
from learner.config import LearnerConfig
from learner.loop import run_learner
from learner.publish import FakePublisher
from learner.train import StepStats
from ledger.bus import MemoryBus
from ledger.published import PublishedVersion
from ledger.reads import MemoryScoredEpisodes
from ledger.recorder import Recorder
from ledger.records import Episode, ModelVersion, Score, Turn, TurnChoice
from ledger.training import (
    PER_STEP,
    TRAINING_KEY,
    step_figures,
    training_steps,
    training_summary,
    training_window,
    version_summary,
)
from rlgw.config import Settings


def stats(step: int, tokens: int, entropy: float, ratio_max: float, **kw: object) -> StepStats:
    return StepStats(
        step=step,
        samples=4,
        tokens=tokens,
        entropy=entropy,
        kl_base=0.01 * step,
        ratio_mean=1.0,
        ratio_max=ratio_max,
        clipped_frac=0.1,
        seconds=2.0,
        skipped=Counter(kw.pop("skipped", {})),  # type: ignore[call-overload]
        **kw,  # type: ignore[arg-type]
    )


def test_step_figures_and_the_version_summary() -> None:
    one = step_figures(stats(1, 100, 2.0, 1.5, skipped={"stale": 2}))
    assert one["tokens_per_s"] == 50.0 and one["skipped"] == {"stale": 2} and one["entropy"] == 2.0
    window = training_window([stats(1, 100, 2.0, 1.5, skipped={"stale": 2}), stats(2, 300, 4.0, 3.0)])
    summary = version_summary(window[PER_STEP])
    assert {k: v for k, v in window.items() if k != PER_STEP} == summary
    assert summary["steps"] == 2 and summary["tokens"] == 400 and summary["samples"] == 8
    assert summary["entropy"] == pytest.approx(3.5)  # weighted by loss tokens: (200 + 1200) / 400
    assert summary["ratio_max"] == 3.0 and summary["tokens_per_s"] == 100.0
    assert summary["skipped"] == {"stale": 2}
    nan = step_figures(stats(3, 0, float("nan"), 0.0))
    assert "entropy" not in nan and nan["tokens_per_s"] == 0.0  # no NaN travels
    assert training_steps({"after": None}) == [] and training_steps({TRAINING_KEY: "junk"}) == []
    assert training_summary({TRAINING_KEY: {PER_STEP: window[PER_STEP]}}) == summary  # made from the steps


def test_a_learner_summary_with_newer_names_is_read_as_sent() -> None:
    """The learner's own per-version figures (kl_base, clipped_frac, ratio_min ...) win over a
    summary made here; a held-back version named in the next one's window is an alarm."""
    reg = VersionRegistry(VersionsConfig(), Recorder(MemoryBus()), lambda: "fake-base")
    figures = {"steps": 4, "tokens": 900, "entropy": 2.4, "kl_base": 0.012, "clipped_frac": 0.03,
               "ratio_min": 0.4, "ratio_max": 2.5, "tokens_per_s": 61.0, "skipped": {"stale": 1}}  # fmt: skip
    held = {"version": "v2-x", "reason": "kl_base 0.410 > max_kl_base 0.3", "training": {"kl_base": 0.41}}
    window = {TRAINING_KEY: figures, "held_back": [held]}
    reg.register(PublishedVersion(version="v3-y", adapter_path="/tmp/v3", data_window=window))
    data = snapshot(reg, reg.recorder, None)
    [row] = data["learner"]
    assert row["summary"] == figures and row["steps"] == []
    [alarm] = data["alarms"]
    assert alarm["version"] == "v2-x" and alarm["event"] == "held_back"
    assert "kl_base 0.410" in alarm["reason"] and "v3-y" in alarm["reason"]
    assert alarm["figures"]["kl_base"] == 0.41


def scored(n: int) -> MemoryScoredEpisodes:
    reader = MemoryScoredEpisodes()
    for i in range(n):
        choice = TurnChoice(
            message={"role": "assistant", "content": "x"}, token_ids=[5, 6], logprobs=[-1.0, -1.0]
        )
        turn = Turn(episode_id=f"e{i}", model="m", version="base", choices=[choice], prompt_token_ids=[3, 4])
        turn.tokens_recorded = True
        score = Score(episode_id=f"e{i}", rubric="r", rubric_version="1", total=float(i % 2), version="base")
        reader.add(score, Episode(episode_id=f"e{i}", turns=[turn]))
    return reader


def test_a_published_version_carries_its_steps_figures(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = LearnerConfig(device="cpu", batch_episodes=4, steps_per_version=2, model=str(tiny_model_dir))
    settings = Settings(data_dir=tmp_path, learner=cfg)
    publisher = FakePublisher()
    run_learner(settings, scored(8), publisher, threading.Event(), max_versions=1)
    [published] = publisher.published
    steps = training_steps(published["data_window"])
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        assert s["tokens"] > 0 and s["entropy"] > 0 and s["ratio_mean"] > 0 and s["tokens_per_s"] > 0
    assert published["data_window"]["episodes"] == 8  # the window itself is unchanged


def test_the_dashboard_data_has_learner_rows_alarms_and_evals() -> None:
    reg = VersionRegistry(VersionsConfig(), Recorder(MemoryBus()), lambda: "fake-base")
    window = {
        "episodes": 8,
        TRAINING_KEY: training_window([stats(1, 100, 2.0, 1.5), stats(2, 100, 2.2, 1.2)]),
    }
    reg.register(PublishedVersion(version="v1", adapter_path="/tmp/v1", data_window=window))
    data = snapshot(reg, reg.recorder, None)
    [row] = data["learner"]
    assert row["version"] == "v1" and [s["step"] for s in row["steps"]] == [1, 2]
    assert row["summary"]["entropy"] == pytest.approx(2.1) and row["summary"]["ratio_max"] == 1.5
    assert data["alarms"] == [] and data["evals"] == []
    for event, reason, figures in (
        ("alarm_entropy", "entropy 3.9 over 3.5", {"entropy": 3.9}),
        ("eval_passed", "held-out 0.61 vs parent 0.55", {"reward": 0.61}),
    ):  # as a following gateway takes them from the versions topic
        record = ModelVersion(version="v1", status="registered", event=event, reason=reason, figures=figures)
        reg.apply(record)
    data = snapshot(reg, reg.recorder, None)
    assert [a["event"] for a in data["alarms"]] == ["alarm_entropy"]
    assert data["evals"][0]["figures"] == {"reward": 0.61}


def test_a_following_gateway_keeps_the_figures() -> None:
    follower = VersionRegistry(VersionsConfig(), Recorder(MemoryBus()), lambda: "fake-base")
    window = {TRAINING_KEY: training_window([stats(1, 100, 2.0, 1.5)])}
    follower.apply(ModelVersion(version="v1", status="canary", event="canary", data_window=window))
    assert snapshot(follower, follower.recorder, None)["learner"][0]["version"] == "v1"
