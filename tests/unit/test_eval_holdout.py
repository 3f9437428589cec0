"""The held-out rule (ledger/holdout.py), the paired interval (rewards/paired.py) and the
evaluation against the fake gateway client (rewards/evaluation.py)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from learner.selection import TrainedEpisodes, select
from ledger.holdout import eval_prompt, held_out, heldout_prompts, holdout_bucket
from ledger.records import Episode, Score, Turn, TurnChoice
from rewards.eval_client import FakeEvalClient
from rewards.eval_report import EvalReport
from rewards.evaluation import EvalSettings, evaluate, evaluate_on_gateway, load_dataset
from rewards.paired import paired, t_quantile
from rewards.rubric import Rubric, metric, reward
from rewards.view import EpisodeView


def episode(eid: str, content: str = "hi", **turn: object) -> Episode:
    request = {"messages": [{"role": "user", "content": content}], "temperature": 0.7, "stream": True}
    t = Turn(episode_id=eid, model="rlgw", version="base", request=request, choices=[TurnChoice()], **turn)  # type: ignore[arg-type]
    return Episode(episode_id=eid, turns=[t])


def test_the_split_is_a_function_of_the_id_alone_at_the_configured_share() -> None:
    ids = [f"ep-{i}" for i in range(20000)]
    share = sum(held_out(e, 0.1) for e in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert [held_out(e, 0.1) for e in ids[:200]] == [holdout_bucket(e) < 0.1 for e in ids[:200]]
    assert not any(held_out(e, 0.0) for e in ids)
    # a larger fraction keeps every episode a smaller one held out (nothing trained moves back)
    assert all(held_out(e, 0.2) for e in ids if held_out(e, 0.1))


def test_the_learner_never_trains_a_held_out_episode() -> None:
    class Item:
        def __init__(self, eid: str) -> None:
            self.score = Score(episode_id=eid, rubric="r", rubric_version="1", total=1.0)
            self.episode = Episode(episode_id=eid, scores=[self.score])

    ids = [f"e{i}" for i in range(400)]
    chosen = select([Item(e) for e in ids], TrainedEpisodes(), 0.1)
    out = sum(held_out(e, 0.1) for e in ids)
    assert chosen.skipped == {"held_out": out} and 0 < out < 80
    assert not any(held_out(item.episode.episode_id, 0.1) for item, _ in chosen.items)


def test_held_out_prompts_are_first_requests_without_the_reply_shape() -> None:
    eps = [episode(f"ep-{i}", f"q{i}") for i in range(300)]
    eps.append(episode("alt", metadata={"exploration_of": "x"}))
    prompts = heldout_prompts(eps, 0.1, 5)
    assert len(prompts) == 5 and all(held_out(p.id, 0.1) for p in prompts)
    assert prompts[0].request == {
        "messages": [{"role": "user", "content": prompts[0].request["messages"][0]["content"]}],
        "temperature": 0.7,
    }
    assert eval_prompt(episode("failed", status=502)) is None
    assert eval_prompt(episode("alt", metadata={"exploration_of": "x"})) is None


def test_t_quantiles_and_the_paired_interval() -> None:
    assert t_quantile(0.95, 1) == pytest.approx(6.3138, abs=1e-3)
    assert t_quantile(0.95, 2) == pytest.approx(2.9200, abs=1e-3)
    assert t_quantile(0.95, 5) == pytest.approx(2.0150, abs=2e-3)
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-3)
    parent, version = [0.2, 0.5, 0.9, 0.4], [0.3, 0.5, 1.0, 0.6]
    cmp = paired(parent, version, 0.9)
    diffs = [v - p for p, v in zip(parent, version, strict=True)]
    half = t_quantile(0.95, 3) * statistics.stdev(diffs) / 2
    assert cmp.diff == pytest.approx(0.1) and cmp.low == pytest.approx(0.1 - half)
    assert not cmp.worse(0.0)
    assert paired([1.0] * 8, [0.0] * 8, 0.9).worse(0.5)  # certain loss beyond the margin
    assert not paired([1.0, 0.0], [0.0, 1.0], 0.9).worse(0.0)  # noise: not stopped
    assert paired([1.0], [0.0], 0.9).high is None  # one pair: no interval, never worse
    with pytest.raises(ValueError):
        paired([1.0], [], 0.9)


@reward(inline=True)
def short(ep: EpisodeView) -> float:
    return 1.0 if len(ep.final_answer.split()) <= 3 else 0.0


@metric(inline=True)
def words(ep: EpisodeView) -> float:
    return float(len(ep.final_answer.split()))


BRIEF = Rubric("brief", [short, words])
OTHER = Rubric("other", [short], match={"task": "nothing-matches"})


def fake(good: bool) -> FakeEvalClient:
    prompts = [p for i in range(200) if (p := eval_prompt(episode(f"ep-{i}"))) and held_out(p.id, 0.1)]

    def answer(version: str, request: dict[str, object]) -> str:
        return "fine short" if version == "base" or good else "a long rambling answer of many words"

    versions = {"serving": "base", "versions": [{"id": "v1", "parent": "base", "status": "evaluating"}]}
    return FakeEvalClient(answer, held_out=prompts, versions=versions)


async def test_a_worse_version_is_found_and_a_good_one_passes() -> None:
    client = fake(good=False)
    report = await evaluate_on_gateway(
        client, "v1", [BRIEF, OTHER], EvalSettings(n=8, max_tokens=None, concurrency=4)
    )
    assert report.verdict == "worse" and not report.passed and report.parent == "base"
    row = report.reward("brief")
    assert row is not None and (row.n, row.parent, row.version, row.worse) == (8, 1.0, 0.0, True)
    assert report.reward("other") is None  # a rubric that matched nothing has no rows
    assert {v for v, _ in client.calls} == {"v1", "base"} and len(client.calls) == 16
    assert all(
        r["seed"] == b["seed"] for (_, r), (_, b) in zip(client.calls[::2], client.calls[1::2], strict=True)
    )
    assert "WORSE" in report.table() and "words" in report.table()
    back = EvalReport.from_dict(report.to_dict())
    assert (back.rows, back.verdict, back.reason) == (report.rows, report.verdict, report.reason)

    ok = await evaluate_on_gateway(fake(good=True), "v1", [BRIEF], EvalSettings(n=8, max_tokens=16))
    assert ok.verdict == "pass" and ok.passed
    empty = await evaluate(fake(good=True), [BRIEF], "v1", "base", [])
    assert empty.verdict == "no_data" and empty.passed


async def test_failed_calls_are_counted_and_a_dataset_adds_tasks(tmp_path: Path) -> None:
    data = tmp_path / "tasks.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "x"}], "task": "t", "max_tokens": 64}\n\n')
    (task,) = load_dataset(data)
    assert task.task == "t" and task.request == {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 64,
    }
    client = FakeEvalClient(lambda v, r: None if v == "v1" else "ok")
    report = await evaluate_on_gateway(
        client, "v1", [BRIEF], EvalSettings(n=0, dataset=data, max_tokens=8), parent="base"
    )
    # the version answered none of them while its parent did: a broken version is worse
    assert report.prompts == 1 and len(report.failed) == 1 and report.verdict == "worse"
    assert report.reason == "v1 failed 1 of 1 evaluation requests (base: 0)"
    assert client.calls[0][1]["max_tokens"] == 8
    (tmp_path / "bad.jsonl").write_text('{"prompt": "no messages"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_dataset(tmp_path / "bad.jsonl")
