"""Scored episodes -> token-level samples, from the token ids and log-probs the gateway recorded.

Nothing is re-tokenised: a sample is the served prompt token ids followed by the served
completion token ids, with the behaviour log-prob of each completion token. Only completion
tokens carry loss (`loss_mask`); prompt tokens, and the tokens a later turn's prompt adds
(the user's next message, tool results, the chat template's glue), are context only.

Multi-turn rule: a turn whose `prompt_token_ids` starts with the previous turn's prompt +
completion continues the same sample (its extra prompt tokens are appended as context, its
completion as loss tokens); any other turn starts a new sample. Every sample of an episode
gets the episode's reward for the score's rubric.

Sampling: each loss token carries the sampling parameters of the turn that served it
(`Turn.sampling`; turns recorded before it: read from the request by ledger.sampling), so the
learner rebuilds the distribution the recorded log-prob was taken under (learner/processing.py).

Greedy and other untrainable turns stay in the sample as context, never as loss tokens:
- greedy (temperature below vLLM's 1e-5): the token was not drawn from a distribution but
  taken as the argmax; the behaviour policy is a point mass. Its log-prob is 0 under the
  policy that served it, so the served policy's gradient on it is 0 (grad log 1), and the
  importance ratio pi(y)/mu(y) against a point mass is not a ratio of two overlapping
  policies: truncation cannot repair the bias. Training it as an ordinary sample (what the
  T = 1 log-prob vLLM returns for it would suggest) reinforces the model's own argmax with no
  exploration behind it. Its reward still counts for the version's live statistics (the rubric
  worker scores every episode); only the policy gradient leaves it out. A top_k = 1 turn needs
  no rule: every processed log-prob is 0 and the gradient vanishes by itself.
- sampling the learner cannot rebuild (penalties, logit_bias, a grammar: `Sampling.unsupported`).

Counted, never raised: turns without recorded tokens (`tokens_recorded=False`), malformed
turns (log-probs missing or of the wrong length), and samples longer than `max_tokens`.
A turn with several choices contributes its first one: one episode score cannot tell the
others apart (exploration groups record each completion as its own turn with a `group_id`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ledger.records import Episode, Score, Turn
from ledger.sampling import Sampling, sampling_of


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
    sampling: list[Sampling | None] | None = None  # (T,) each loss token's sampling parameters; None: T = 1

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
        served = turn.sampling or sampling_of(turn.request)
        trained = _trainable(served, stats)
        params = served if trained else None
        if current is not None and _extends(prompt, current.tokens):
            extra = prompt[len(current.tokens) :]
            current.tokens += extra + completion
            current.loss_mask += [False] * len(extra) + [trained] * len(completion)
            current.behaviour_logprobs += [0.0] * len(extra) + logprobs
            current.sampling = (current.sampling or []) + [None] * len(extra) + [params] * len(completion)
            current.versions.append(turn.version)
            stats.counts["turns_continued"] += 1
            continue
        current = Sample(
            tokens=prompt + completion,
            loss_mask=[False] * len(prompt) + [trained] * len(completion),
            behaviour_logprobs=[0.0] * len(prompt) + logprobs,
            reward=float(score.total),
            rubric=score.rubric,
            task=task,
            episode_id=episode.episode_id,
            versions=[turn.version],
            group_id=turn.group_id,
            sampling=[*([None] * len(prompt)), *([params] * len(completion))],
        )
        out.append(current)
    kept = []
    for s in out:
        if not any(s.loss_mask):
            stats.counts["no_loss_tokens"] += 1
        elif len(s.tokens) > max_tokens:
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


def _trainable(params: Sampling, stats: SampleStats) -> bool:
    """Whether a turn's completion is loss (module docstring: greedy and unrebuildable turns are context)."""
    if params.greedy:
        stats.counts["turns_greedy"] += 1
        return False
    if params.unsupported is not None:
        stats.counts["turns_sampling_unsupported"] += 1
        return False
    return True


def _extends(prompt: list[int], previous: list[int]) -> bool:
    return len(prompt) >= len(previous) and prompt[: len(previous)] == previous
