"""Each episode trains once, with one reward (learner/selection.py), in the loop and across a restart."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from learner.advantages import Advantages
from learner.config import LearnerConfig
from learner.loop import run_learner
from learner.publish import FakePublisher
from learner.selection import TrainedEpisodes, select
from ledger.reads import MemoryScoredEpisodes
from ledger.records import Episode, Score, Turn, TurnChoice
from rlgw.config import Settings


def episode(eid: str, *scores: Score) -> Episode:
    turn = Turn(
        episode_id=eid,
        model="m",
        version="base",
        prompt_token_ids=[1, 50, 2, 1],
        choices=[TurnChoice(token_ids=[10, 20, 2], logprobs=[-6.6] * 3)],
        tokens_recorded=True,
    )
    return Episode(episode_id=eid, turns=[turn], scores=list(scores))


def score(eid: str, rubric: str, total: float, seq: int = 0) -> Score:
    return Score(episode_id=eid, rubric=rubric, rubric_version="1", total=total, feedback_seq=seq, task="t")


class Item:
    def __init__(self, s: Score, ep: Episode) -> None:
        self.score, self.episode, self.position = s, ep, "0"


def test_two_rubrics_give_one_mean_reward_and_a_later_score_moves_only_the_baseline() -> None:
    a, b = score("e1", "brief", 1.0), score("e1", "polite", 0.0)
    both = episode("e1", a, b)
    trained = TrainedEpisodes()
    first = select([Item(a, both), Item(b, both)], trained)
    ((_, reward),) = first.items
    assert (reward.rubric, reward.total, reward.task) == ("brief+polite", 0.5, "t")
    assert first.skipped == {"scores_merged": 1}

    rescored = score("e1", "polite", 1.0, seq=1)  # late feedback: the newest polite score wins
    later = select([Item(rescored, episode("e1", a, b, rescored))], trained)
    assert later.items == [] and later.skipped == {"rescored_after_training": 1}
    assert later.baseline_only == [("brief+polite", "t", 1.0)]
    adv = Advantages(alpha=0.5)
    adv.baseline[("brief+polite", "t")] = 0.5
    adv.observe(*later.baseline_only[0])
    assert adv.baseline[("brief+polite", "t")] == pytest.approx(0.75)


def test_the_memory_of_trained_episodes_is_bounded_and_round_trips() -> None:
    trained = TrainedEpisodes(limit=3)
    for k in "abcd":
        trained.add(k)
    assert "a" not in trained and "d" in trained
    again = TrainedEpisodes(limit=3)
    again.load(trained.state())
    assert again.state() == ["b", "c", "d"]


def test_the_loop_trains_each_episode_once_across_rubrics_rescores_and_a_restart(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = LearnerConfig(device="cpu", batch_episodes=4, steps_per_version=1, poll_interval_s=0.01)
    settings, model, stop = Settings(data_dir=tmp_path, learner=cfg), tiny_model_dir, threading.Event()
    reader = MemoryScoredEpisodes()
    for i in range(4):  # one read: 2 episodes x 2 rubrics
        eid = f"e{i // 2}"
        s1, s2 = score(eid, "brief", 1.0), score(eid, "polite", 0.0)
        reader.add(s1 if i % 2 == 0 else s2, episode(eid, s1, s2))
    report = run_learner(settings, reader, FakePublisher(), stop, model_dir=model, max_versions=1)
    assert [s.samples for s in report.steps] == [2]
    assert report.skipped["scores_merged"] == 2

    # after a restart: re-scores of e0 and e1 only move baselines; two new episodes train
    for eid in ("e0", "e1", "e2", "e3"):
        s = score(eid, "brief", 0.0, seq=1)
        reader.add(s, episode(eid, s))
    report = run_learner(settings, reader, FakePublisher(), stop, model_dir=model, max_versions=1)
    assert [s.samples for s in report.steps] == [2]
    assert report.skipped["rescored_after_training"] == 2
