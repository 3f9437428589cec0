"""Exploration groups: k completions of one prompt, one returned, all k recorded for training.

For a configured share of eligible requests (non-streamed, n = 1, a task whose rubrics need no
user feedback), the upstream is asked for `k` completions. The client gets the first; every
completion is recorded as a Turn with the same `group_id`: the first in the client's episode,
each alternative in an episode of its own (`<episode>~x<i>`, ended at once, tagged
`exploration_of`). Rubric workers score the alternatives like any episode, and the learner
gives the group group-relative advantages (learner/advantages.py).
"""

from __future__ import annotations

import random
from typing import Any

from ledger.ids import new_id


class Exploration:
    def __init__(self, share: float, k: int, tasks: list[str] | None, seed: int | None = None) -> None:
        self.share, self.k, self.tasks = share, k, tasks
        self._rng = random.Random(seed)

    def pick(self, body: dict[str, Any], task: str | None) -> int:
        """How many completions to ask for: k for an exploration group, else 1 (no change)."""
        if self.share <= 0 or self.k < 2 or body.get("stream") or body.get("n") not in (None, 1):
            return 1
        if self.tasks is not None and task not in self.tasks:
            return 1
        return self.k if self._rng.random() < self.share else 1

    @staticmethod
    def group_id() -> str:
        return new_id()

    @staticmethod
    def alternative_episode(episode_id: str, i: int) -> str:
        return f"{episode_id}~x{i}"

    @staticmethod
    def answer_only_first(data: dict[str, Any]) -> None:
        """Trim a k-completion reply to the one the client gets (in place); usage follows it."""
        first = (data.get("choices") or [])[:1]
        data["choices"] = first
        usage, ids = data.get("usage"), first[0].get("token_ids") if first else None
        if isinstance(usage, dict) and ids is not None:
            usage["completion_tokens"] = len(ids)
            usage["total_tokens"] = usage.get("prompt_tokens", 0) + len(ids)
