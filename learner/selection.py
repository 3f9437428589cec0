"""Which scored episodes a step trains on, and with what reward: each episode once.

The learner reads scores in the order the store received them, and one episode can yield
several: one per rubric that matched it, and a new one each time late feedback re-scores it.
Training on each would count the episode once per score (2 rubrics -> every episode trained
twice; a thumbs-up an hour later -> trained again on stale tokens). The rule:

- **One reward per episode.** An episode trains at the first read that holds any of its scores,
  with the mean of the current totals (the newest score of each rubric, `Episode.current_scores`,
  failed rubrics left out) of every rubric that had scored it by then. Each rubric's total is
  already its own weighted sum; rubrics matched on one episode are separate requirements, so
  each gets an equal say. The baseline key is the rubrics' names joined with "+", so a
  combination is compared with itself (learner/advantages.py).
- **Once.** An episode the learner already trained on is never trained again: a later score
  of it (a re-score, or a rubric that came late) updates the running baseline of its key with
  the new reward and nothing else (`Selection.baseline_only`). The gateway's live statistics
  (dashboards, canary decisions) read scores from the ledger on their own and see every score.

- **Never a held-out episode.** An episode the held-out rule sets aside (ledger/holdout.py,
  `ledger.holdout_fraction`) is skipped as `held_out`: the evaluation before a canary replays
  those prompts, and a version trained on them would be judged on what it memorised.

The trained episodes are remembered in the learner's checkpoint (`TrainedEpisodes`), the
newest `TRAINED_MEMORY` of them: a re-score of an episode older than that would train again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.holdout import held_out
from ledger.records import Score

TRAINED_MEMORY = 100_000  # episode ids kept (~4 MB in each version's state.json at most)


class TrainedEpisodes:
    """The (tenant, episode) keys trained on, oldest first, the newest TRAINED_MEMORY kept."""

    def __init__(self, limit: int = TRAINED_MEMORY) -> None:
        self.limit = limit
        self._keys: dict[str, None] = {}  # insertion-ordered set

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        while len(self._keys) > self.limit:
            del self._keys[next(iter(self._keys))]

    def state(self) -> list[str]:
        return list(self._keys)

    def load(self, keys: Sequence[str]) -> None:
        self._keys = {}
        for k in keys:
            self.add(k)


@dataclass
class Selection:
    items: list[tuple[Any, Score]] = field(default_factory=list)  # (scored item, its training score)
    baseline_only: list[tuple[str, str, float]] = field(default_factory=list)  # (rubric key, task, reward)
    skipped: Counter[str] = field(default_factory=Counter)


def select(batch: Sequence[Any], trained: TrainedEpisodes, holdout: float = 0.0) -> Selection:
    """The episodes of one read that train now, each with one training score, and the rewards of
    episodes trained before (module docstring). `batch` items have `.score` and `.episode`;
    `holdout` is the held-out fraction (ledger/holdout.py)."""
    out = Selection()
    now: set[str] = set()
    for item in batch:
        if held_out(item.episode.episode_id, holdout):
            out.skipped["held_out"] += 1
            continue
        key = f"{item.score.tenant}/{item.episode.episode_id}"
        if key in now:  # another score of an episode this read trains: already in its reward
            out.skipped["scores_merged"] += 1
            continue
        if key in trained:
            score = training_score(item.episode.current_scores.values(), fallback=item.score)
            if score.total is not None:
                out.baseline_only.append((score.rubric, score.task or "", float(score.total)))
            out.skipped["rescored_after_training"] += 1
            continue
        trained.add(key)
        now.add(key)
        out.items.append((item, training_score(item.episode.current_scores.values(), fallback=item.score)))
    return out


def training_score(scores: Any, *, fallback: Score) -> Score:
    """One Score standing for all of an episode's current scores: the mean of the totals that
    are not None, under the rubrics' joined names (`fallback`: when the episode holds none)."""
    current = sorted((s for s in scores if s.total is not None), key=lambda s: s.rubric)
    if not current:
        return fallback
    if len(current) == 1:
        return current[0]
    totals = [float(s.total) for s in current if s.total is not None]
    return Score(
        episode_id=fallback.episode_id,
        tenant=fallback.tenant,
        rubric="+".join(s.rubric for s in current),
        rubric_version="+".join(s.rubric_version for s in current),
        total=sum(totals) / len(totals),
        version=fallback.version,
        task=next((s.task for s in current if s.task), None),
        traceparent=fallback.traceparent,
    )
