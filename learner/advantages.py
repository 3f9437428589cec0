"""Advantages for live traffic, where each prompt is usually answered once.

Estimator, per sample i with reward r_i, rubric k_i and task key t_i:

    group-relative   if i has a group_id shared by g >= 2 samples of the batch (an
                     exploration group: g completions of one prompt):
                         a_i = r_i - mean_{j in group} r_j
    running baseline otherwise:
                         a_i = r_i - b[k_i, t_i]
                     where b is an exponential moving average of past rewards for that
                     (rubric, task key), updated after the batch (b <- b + alpha (r - b), per
                     sample, in order). A key seen for the first time starts at the mean reward
                     of its samples in this batch, so a new task contributes ~0 rather than a
                     large, arbitrary push.
    normalisation    a_i <- a_i / (sqrt(mean_j a_j^2) + eps)   over the whole batch.

The normalisation is scale-only (the root mean square, not the standard deviation, and no
re-centring): the baselines already centre the advantages, and re-centring on the batch would
erase the signal of a batch that is better than the baseline across the board. A batch whose
advantages are all zero stays zero. Rubrics with different reward scales share one scale per
batch; the per-(rubric, task) baselines keep them from biasing each other.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from learner.samples import Sample


class Advantages:
    def __init__(self, alpha: float = 0.1, eps: float = 1e-6) -> None:
        self.alpha = alpha
        self.eps = eps
        self.baseline: dict[tuple[str, str], float] = {}

    def assign(self, samples: Sequence[Sample]) -> None:
        """Set `sample.advantage` for every sample, then update the baselines."""
        groups: dict[str, list[Sample]] = defaultdict(list)
        by_key: dict[tuple[str, str], list[float]] = defaultdict(list)
        for s in samples:
            if s.group_id is not None:
                groups[s.group_id].append(s)
            by_key[(s.rubric, s.task)].append(s.reward)
        for key, rewards in by_key.items():
            self.baseline.setdefault(key, sum(rewards) / len(rewards))

        raw: list[float] = []
        for s in samples:
            group = groups.get(s.group_id or "", [])
            if len(group) >= 2:
                raw.append(s.reward - sum(g.reward for g in group) / len(group))
            else:
                raw.append(s.reward - self.baseline[(s.rubric, s.task)])
        rms = math.sqrt(sum(a * a for a in raw) / len(raw)) if raw else 0.0
        for s, a in zip(samples, raw, strict=True):
            s.advantage = a / (rms + self.eps)

        for s in samples:
            key = (s.rubric, s.task)
            self.baseline[key] += self.alpha * (s.reward - self.baseline[key])

    def observe(self, rubric: str, task: str, reward: float) -> None:
        """Move one baseline towards a reward that is not trained on (a re-score, learner/selection.py)."""
        key = (rubric, task)
        self.baseline.setdefault(key, reward)
        self.baseline[key] += self.alpha * (reward - self.baseline[key])

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "baseline": [[k[0], k[1], v] for k, v in self.baseline.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = float(state.get("alpha", self.alpha))
        self.baseline = {(str(r), str(t)): float(v) for r, t, v in state.get("baseline", [])}
