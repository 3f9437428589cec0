"""Scored episodes -> token-level samples, from the token ids and log-probs the gateway recorded.

Nothing is re-tokenised: a sample is the served prompt token ids followed by the served
completion token ids, with the behaviour log-prob of each completion token. Only completion
tokens carry loss (`loss_mask`); prompt tokens, and the tokens a later turn's prompt adds
(the user's next message, tool results, the chat template's glue), are context only.

Multi-turn rule: a turn whose `prompt_token_ids` starts with the previous turn's prompt +
completion continues the same sample (its extra prompt tokens are appended as context, its
completion as loss tokens); any other turn starts a new sample. Every sample of an episode
gets the episode's reward for the score's rubric.

Counted, never raised: turns without recorded tokens (`tokens_recorded=False`), malformed
turns (log-probs missing or of the wrong length), and samples longer than `max_tokens`.
A turn with several choices contributes its first one: one episode score cannot tell the
others apart (exploration groups record each completion as its own turn with a `group_id`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ledger.records import Episode, Score, Turn


@dataclass
class Sample:
    tokens: list[int]  # (T,) prompt and completion tokens of one or more turns
    loss_mask: list[bool]  # (T,) True on completion tokens
    behaviour_logprobs: list[float]  # (T,) served log-prob of each completion token, 0.0 elsewhere
    reward: float
    rubric: str
    task: str  # the task key the baseline is kept for
    episode_id: str
    versions: list[str]  # versions that served its turns, in order
    group_id: str | None = None
    advantage: float = 0.0  # set by learner.advantages

    @property
    def loss_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass
class SampleStats:
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, other: SampleStats) -> None:
        self.counts.update(other.counts)


def build_samples(
    score: Score, episode: Episode, *, max_tokens: int = 4096
) -> tuple[list[Sample], SampleStats]:
    """The samples one score of one episode yields, and what was skipped (counted by reason)."""
    stats = SampleStats()
    if score.total is None:
        stats.counts["unscored"] += 1
        return [], stats
    task = score.task or next((t.task for t in episode.turns if t.task), None) or ""
    out: list[Sample] = []
    current: Sample | None = None
    for turn in episode.turns:
        usable = _usable(turn, stats)
        if usable is None:
            current = None  # a gap in the record: whatever follows starts afresh
            continue
        prompt, completion, logprobs = usable
        if current is not None and _extends(prompt, current.tokens):
            extra = prompt[len(current.tokens) :]
            current.tokens += extra + completion
            current.loss_mask += [False] * len(extra) + [True] * len(completion)
            current.behaviour_logprobs += [0.0] * len(extra) + logprobs
            current.versions.append(turn.version)
            stats.counts["turns_continued"] += 1
            continue
        current = Sample(
            tokens=prompt + completion,
            loss_mask=[False] * len(prompt) + [True] * len(completion),
            behaviour_logprobs=[0.0] * len(prompt) + logprobs,
            reward=float(score.total),
            rubric=score.rubric,
            task=task,
            episode_id=episode.episode_id,
            versions=[turn.version],
            group_id=turn.group_id,
        )
        out.append(current)
    kept = []
    for s in out:
        if len(s.tokens) > max_tokens:
            stats.counts["too_long"] += 1
        else:
            kept.append(s)
    stats.counts["samples"] += len(kept)
    return kept, stats


def _usable(turn: Turn, stats: SampleStats) -> tuple[list[int], list[int], list[float]] | None:
    if not turn.tokens_recorded:
        stats.counts["turns_unrecorded"] += 1
        return None
    choice = turn.choices[0] if turn.choices else None
    prompt = turn.prompt_token_ids
    if (
        choice is None
        or not prompt
        or not choice.token_ids
        or choice.logprobs is None
        or len(choice.logprobs) != len(choice.token_ids)
    ):
        stats.counts["turns_malformed"] += 1
        return None
    return list(prompt), list(choice.token_ids), [float(x) for x in choice.logprobs]


def _extends(prompt: list[int], previous: list[int]) -> bool:
    return len(prompt) >= len(previous) and prompt[: len(previous)] == previous
