"""Packing samples without padding: back to back in one row, with their boundaries.

Each micro-batch is one row of at most `max_tokens` tokens; `position_ids` restart at 0 for
every sample, and `cu_seqlens` (where each sample starts, then the row's end) lets the varlen
attention (learner/attention.py) keep each sample's tokens from attending to another's: the
cost of attending within each sample alone, with no (T, T) mask. `attention_kwargs` are what
the model's forward takes to read them. A sample may carry `sampling`, each token's sampling
parameters (None on context tokens); the micro-batch then holds them as `processing`
(learner/processing.py). Imports only torch, learner.attention and learner.processing (the
benchmark runs it on machines without the rest of the project).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from learner.attention import cu_seqlens, varlen_kwargs
from learner.processing import Processing, SamplingParams


class Sample(Protocol):
    """What packing reads of a learner.samples.Sample."""

    tokens: list[int]
    loss_mask: list[bool]
    behaviour_logprobs: list[float]
    advantage: float


@dataclass
class MicroBatch:
    input_ids: Tensor  # (1, T) samples back to back
    position_ids: Tensor  # (1, T) restarting at 0 for each sample
    cu_seqlens: Tensor  # (N+1,) int32: where each of the N samples starts, then T
    max_len: int  # the longest sample's length
    predict_at: Tensor  # (N,) index of the position whose output predicts each loss token
    targets: Tensor  # (N,) the loss tokens
    behaviour: Tensor  # (N,) their behaviour log-probs
    advantages: Tensor  # (N,)
    processing: Processing | None = None  # each loss token's sampling parameters; None: T = 1, untruncated

    @property
    def attention_kwargs(self) -> dict[str, Any]:
        """The boundaries, as the forward's keyword arguments (learner.attention.varlen_kwargs)."""
        return varlen_kwargs(self.cu_seqlens, self.max_len)


def pack(samples: Sequence[Sample], max_tokens: int, device: torch.device) -> list[MicroBatch]:
    """Greedy packing in order: samples back to back until `max_tokens` (a longer one goes alone)."""
    groups: list[list[Sample]] = []
    size = 0
    for s in samples:
        if groups and size + len(s.tokens) <= max_tokens:
            groups[-1].append(s)
            size += len(s.tokens)
        else:
            groups.append([s])
            size = len(s.tokens)
    return [_micro_batch(g, device) for g in groups]


def _micro_batch(samples: Sequence[Sample], device: torch.device) -> MicroBatch:
    ids: list[int] = []
    pos: list[int] = []
    predict_at: list[int] = []
    targets: list[int] = []
    behaviour: list[float] = []
    adv: list[float] = []
    params: list[SamplingParams] = []
    for s in samples:
        sampling = getattr(s, "sampling", None)
        offset = len(ids)
        ids += s.tokens
        pos += range(len(s.tokens))
        for j in range(1, len(s.tokens)):  # token j is predicted by the output at j - 1
            if s.loss_mask[j]:
                predict_at.append(offset + j - 1)
                targets.append(s.tokens[j])
                behaviour.append(s.behaviour_logprobs[j])
                adv.append(s.advantage)
                p = sampling[j] if sampling is not None else None
                params.append(p if p is not None else UNPROCESSED)
    lengths = [len(s.tokens) for s in samples]
    return MicroBatch(
        input_ids=torch.tensor([ids], device=device),
        position_ids=torch.tensor([pos], device=device),
        cu_seqlens=cu_seqlens(lengths, device),
        max_len=max(lengths),
        predict_at=torch.tensor(predict_at, device=device, dtype=torch.long),
        targets=torch.tensor(targets, device=device, dtype=torch.long),
        behaviour=torch.tensor(behaviour, device=device, dtype=torch.float32),
        advantages=torch.tensor(adv, device=device, dtype=torch.float32),
        processing=Processing.of(params, device),
    )


@dataclass(frozen=True)
class _Unprocessed:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0


UNPROCESSED = _Unprocessed()  # the model's own distribution
