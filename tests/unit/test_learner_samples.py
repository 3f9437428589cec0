"""Sample building from recorded token ids, and the advantage estimator."""

from __future__ import annotations

import math

import pytest

from learner.advantages import Advantages
from learner.samples import Sample, build_samples
from ledger.records import Episode, Score, Turn, TurnChoice


def turn(prompt, completion, logprobs=None, *, recorded=True, version="base", group=None) -> Turn:
    lps = logprobs if logprobs is not None else [-0.5] * len(completion)
    return Turn(
        episode_id="e1",
        model="m",
        version=version,
        prompt_token_ids=prompt,
        choices=[TurnChoice(token_ids=completion, logprobs=lps)],
        tokens_recorded=recorded,
        group_id=group,
    )


def score(total=1.0, rubric="r", task="t") -> Score:
    return Score(episode_id="e1", rubric=rubric, rubric_version="1", total=total, task=task)


def test_single_turn_masks_only_the_completion() -> None:
    ep = Episode(episode_id="e1", turns=[turn([1, 2, 3], [7, 8], [-0.1, -0.2])])
    samples, stats = build_samples(score(0.5), ep)
    assert len(samples) == 1
    s = samples[0]
    assert s.tokens == [1, 2, 3, 7, 8]
    assert s.loss_mask == [False, False, False, True, True]
    assert s.behaviour_logprobs == [0.0, 0.0, 0.0, -0.1, -0.2]
    assert (s.reward, s.rubric, s.task, s.versions) == (0.5, "r", "t", ["base"])
    assert stats.counts["samples"] == 1


def test_a_turn_extending_the_previous_prompt_and_completion_continues_the_sample() -> None:
    first = turn([1, 2], [5, 6], [-1.0, -2.0], version="v1")
    second = turn([1, 2, 5, 6, 9, 9], [4], [-3.0], version="v2")  # + the user's next message
    ep = Episode(episode_id="e1", turns=[first, second])
    samples, stats = build_samples(score(), ep)
    assert len(samples) == 1
    s = samples[0]
    assert s.tokens == [1, 2, 5, 6, 9, 9, 4]
    assert s.loss_mask == [False, False, True, True, False, False, True]
    assert s.behaviour_logprobs == [0.0, 0.0, -1.0, -2.0, 0.0, 0.0, -3.0]
    assert s.versions == ["v1", "v2"]
    assert stats.counts["turns_continued"] == 1


def test_a_turn_that_does_not_extend_starts_a_new_sample() -> None:
    ep = Episode(episode_id="e1", turns=[turn([1, 2], [5, 6]), turn([1, 2, 5, 7, 9], [4])])  # 7 != 6
    samples, _ = build_samples(score(), ep)
    assert [s.tokens for s in samples] == [[1, 2, 5, 6], [1, 2, 5, 7, 9, 4]]
    assert all(s.reward == 1.0 for s in samples)


def test_unrecorded_and_malformed_turns_are_skipped_and_counted() -> None:
    ep = Episode(
        episode_id="e1",
        turns=[
            turn([1], [2], recorded=False),
            turn([1, 2], [3, 4], [-0.1]),  # one log-prob for two tokens
            turn([1, 2, 3], [5]),
        ],
    )
    samples, stats = build_samples(score(), ep)
    assert [s.tokens for s in samples] == [[1, 2, 3, 5]]
    assert stats.counts["turns_unrecorded"] == 1
    assert stats.counts["turns_malformed"] == 1


def test_unscored_and_too_long_are_counted() -> None:
    ep = Episode(episode_id="e1", turns=[turn([1, 2, 3], [4, 5])])
    assert build_samples(score(None), ep)[1].counts["unscored"] == 1
    samples, stats = build_samples(score(), ep, max_tokens=4)
    assert samples == [] and stats.counts["too_long"] == 1


def sample(reward: float, task: str = "t", group: str | None = None) -> Sample:
    return Sample(
        tokens=[1, 2],
        loss_mask=[False, True],
        behaviour_logprobs=[0.0, -1.0],
        reward=reward,
        rubric="r",
        task=task,
        episode_id="e",
        versions=["base"],
        group_id=group,
    )


def test_running_baseline_starts_at_the_batch_mean_then_moves_slowly() -> None:
    est = Advantages(alpha=0.5)
    batch = [sample(1.0), sample(0.0)]
    est.assign(batch)
    # baseline 0.5 -> raw advantages +0.5, -0.5; rms 0.5 -> +1, -1
    assert [s.advantage for s in batch] == pytest.approx([1.0, -1.0], abs=1e-5)
    # updated in order: 0.5 + 0.5 * (1 - 0.5) = 0.75, then 0.75 + 0.5 * (0 - 0.75) = 0.375
    assert est.baseline[("r", "t")] == pytest.approx(0.375)

    batch = [sample(1.0), sample(1.0)]  # better than the baseline across the board: kept positive
    est.assign(batch)
    assert all(s.advantage == pytest.approx(1.0, abs=1e-5) for s in batch)


def test_baselines_are_per_task_and_groups_are_relative() -> None:
    est = Advantages(alpha=0.1)
    est.baseline[("r", "easy")] = 0.9
    est.baseline[("r", "hard")] = 0.1
    batch = [sample(1.0, "easy"), sample(0.2, "hard"), sample(1.0, "x", "g"), sample(0.0, "x", "g")]
    est.assign(batch)
    raw = [0.1, 0.1, 0.5, -0.5]
    rms = math.sqrt(sum(a * a for a in raw) / 4)
    assert [s.advantage for s in batch] == pytest.approx([a / rms for a in raw], abs=1e-5)


def test_all_zero_advantages_stay_zero_and_state_round_trips() -> None:
    est = Advantages()
    batch = [sample(0.3), sample(0.3)]
    est.assign(batch)
    assert [s.advantage for s in batch] == [0.0, 0.0]
    other = Advantages()
    other.load_state_dict(est.state_dict())
    assert other.baseline == est.baseline
