"""The held-out rule: which recorded episodes no version trains on, and the prompts they give.

An episode is *held out* when `holdout_bucket(episode id)`, a 64-bit BLAKE2b hash of the id
mapped to [0, 1), is below `ledger.holdout_fraction` (docs/versions.md, "Held-out episodes").
The learner never trains on a held-out episode (learner/selection.py counts it as the skip
reason `held_out`); the evaluation before a version's canary replays their first prompts
(rewards/evaluation.py). Because no version was trained on them, a version's reward on them
measures how it generalises, not what it memorised. A hash of the id needs no coordination:
every gateway, learner and evaluator, in any process, agrees on the split from the id alone,
and the split stays the same across restarts.

Held-out episodes are ordinary live traffic otherwise: served, recorded, scored, counted in
the canary's statistics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ledger.records import Episode

HOLDOUT_SALT = "rlgw-holdout"  # salts the hash, so the split is unrelated to canary buckets
# request fields an evaluation does not replay: the gateway's own, and the shape of the reply
NOT_REPLAYED = ("stream", "stream_options", "n", "logprobs", "top_logprobs", "return_token_ids", "model")


def holdout_bucket(episode_id: str) -> float:
    """A uniform number in [0, 1) for an episode id: below the holdout fraction, it is held out."""
    digest = hashlib.blake2b(f"{HOLDOUT_SALT}\0{episode_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def held_out(episode_id: str, fraction: float) -> bool:
    """Whether no version may train on this episode (it belongs to the evaluation)."""
    return fraction > 0.0 and holdout_bucket(episode_id) < fraction


class EvalPrompt(BaseModel):
    """One prompt an evaluation replays: the first request of a held-out episode (its messages,
    tools and sampling parameters), or a task from a user's JSONL file (rewards/evaluation.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """The held-out episode's id (or the task's id in a dataset)."""
    request: dict[str, Any]
    """A chat-completions request body: messages, tools, sampling parameters."""
    tenant: str = "default"
    model: str = ""
    """The public model name the episode asked for (rubrics may match on it)."""
    task: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    """The turn's metadata (rubrics may read a reference answer from it)."""


def eval_prompt(episode: Episode) -> EvalPrompt | None:
    """The prompt of an episode's first answered turn; None when it has none to replay (no
    answered turn, no messages, or an exploration group's alternative)."""
    first = next((t for t in episode.turns if t.status == 200), None)
    if first is None or not first.request.get("messages") or "exploration_of" in first.metadata:
        return None
    request = {k: v for k, v in first.request.items() if k not in NOT_REPLAYED}
    return EvalPrompt(
        id=episode.episode_id,
        request=request,
        tenant=episode.tenant,
        model=first.model,
        task=first.task,
        metadata=dict(first.metadata),
    )


def heldout_prompts(episodes: Iterable[Episode], fraction: float, n: int) -> list[EvalPrompt]:
    """Up to `n` prompts of the held-out episodes among `episodes` (newest first, as the
    store's `episodes()` returns them), each prompt once."""
    out: list[EvalPrompt] = []
    seen: set[str] = set()
    for ep in episodes:
        if len(out) >= n:
            break
        if ep.episode_id in seen or not held_out(ep.episode_id, fraction):
            continue
        prompt = eval_prompt(ep)
        if prompt is not None:
            seen.add(ep.episode_id)
            out.append(prompt)
    return out
