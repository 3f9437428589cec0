"""The objective: token-level policy gradient with truncated importance weights.

For each loss token t (a completion token), with the learner's log-prob l_t = log pi(y_t | ...)
under the distribution the token was sampled from (the model's logits after the turn's
temperature, min_p, top_k and top_p: learner/processing.py), the behaviour log-prob b_t recorded
when it was served (vLLM's processed log-prob of the same distribution, docs/vllm.md), and the
sample's advantage A_t:

    rho_t  = exp(l_t - b_t)                    importance ratio, learner vs server
    w_t    = min(rho_t, clip)                  truncated importance weight (no gradient)
    loss   = -sum_t w_t * A_t * l_t / N        N: loss tokens of the whole step (token-level mean)
           + kl_coef * sum_t k3_t / N          optional KL to the base model, k3 estimator:
    k3_t   = exp(r_t - u_t) - (r_t - u_t) - 1  u_t, r_t: the learner's and the base model's raw
                                               log-probs (the models' own distributions, T = 1)

The gradient of the first term is w_t * A_t * grad l_t: the off-policy policy gradient with the
importance weight truncated at `clip` (truncated importance sampling). Truncation bounds the
variance that stale or mismatched behaviour log-probs would otherwise add; it biases the
estimate only for tokens with rho > clip, whose share is reported as `clipped`. Why a
correction at all: the learner is a version or more ahead of the server (staleness), and
bf16 serving differs from the learner's log-probs by up to ~0.2 nats per token (docs/tolerances.md),
i.e. ratios of 0.8-1.2 per token even on-policy. clip = 2 keeps on-policy noise unclipped.
Taking l_t under the processed distribution makes the served policy the one being improved:
at temperature 0.5 a raw l_t would sit well below b_t for most sampled tokens, and the ratio
would read "off-policy" on fresh on-policy data.

Log-probs are computed from the final hidden states in chunks of `chunk` tokens through the
LM head, each chunk under activation checkpointing: full-vocabulary float logits exist for
one chunk at a time, in the forward and in the backward pass. The price is a second LM-head
matmul per chunk in the backward; `recompute=False` keeps every chunk's logits instead
(n x V x 6 bytes each in bf16: ~5.6 GB for 6k loss tokens at Qwen3's vocabulary of 152k), for
benchmarks/learner_step.py to measure what the recomputation costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from learner.processing import Processing

STATISTICS = ("loss", "pg_loss", "kl", "ratio_sum", "ratio_max", "ratio_min", "clipped")  # besides "tokens"


class TokenLogProbs(NamedTuple):
    logprobs: Tensor  # (N,) under each token's sampling distribution (learner/processing.py), grad
    entropy: Tensor  # (N,) of the model's own distribution, without gradient
    raw: Tensor  # (N,) under the model's own distribution, grad (the KL term's); `logprobs` if unprocessed


def chunked_logprobs(
    hidden: Tensor,  # (N, H) final hidden states at the positions that predict `targets`
    targets: Tensor,  # (N,) token ids
    lm_head: Callable[[Tensor], Tensor],  # (n, H) -> (n, V); a plain Linear or a LoRA-wrapped one
    chunk: int = 1024,
    *,
    recompute: bool = True,  # checkpoint each chunk (module docstring)
    processing: Processing | None = None,  # each token's sampling parameters; None: the raw distribution
) -> TokenLogProbs:
    """Log-prob of each target under the distribution it was sampled from, the model's entropy
    at each position, and the raw log-prob (the same tensor when nothing was processed)."""
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start : start + chunk], targets[start : start + chunk]
        proc = None if processing is None else processing.rows(start, start + h.shape[0])
        if recompute and torch.is_grad_enabled() and h.requires_grad:
            part = checkpoint(_chunk_logprobs, h, y, lm_head, proc, use_reentrant=False)
        else:
            part = _chunk_logprobs(h, y, lm_head, proc)
        parts.append(part)
    if not parts:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return TokenLogProbs(empty, empty, empty)
    lp, ent, raw = (torch.cat(t) for t in zip(*parts, strict=True))
    return TokenLogProbs(lp, ent, raw if processing is not None else lp)


def _chunk_logprobs(
    h: Tensor, y: Tensor, lm_head: Callable[[Tensor], Tensor], proc: Processing | None
) -> tuple[Tensor, Tensor, Tensor]:
    logits = lm_head(h).float()  # (n, V), float32 for one chunk only
    logz = torch.logsumexp(logits, dim=-1)  # (n,)
    raw = logits.gather(-1, y[:, None])[:, 0] - logz  # (n,)
    with torch.no_grad():
        p = torch.softmax(logits, dim=-1)
        ent = logz - (p * logits).sum(-1)  # (n,)  H = logZ - E_p[logit]
    if proc is None:
        return raw, ent.detach(), raw
    z = proc.apply(logits)  # (n, V) -inf outside each row's kept set
    lp = z.gather(-1, y[:, None])[:, 0] - torch.logsumexp(z, dim=-1)  # (n,) -inf if y was cut
    return lp, ent.detach(), raw


def policy_gradient_loss(
    logprobs: Tensor,  # (N,) learner log-probs of the loss tokens under their sampling distributions
    behaviour_logprobs: Tensor,  # (N,) recorded when served (the same distributions)
    advantages: Tensor,  # (N,) the sample's advantage, repeated on each of its tokens
    *,
    clip: float,
    normaliser: float,  # N of the whole step (micro-batches share one normaliser)
    ref_logprobs: Tensor | None = None,  # (N,) base-model raw log-probs, for the KL term
    kl_coef: float = 0.0,
    raw_logprobs: Tensor | None = None,  # (N,) the learner's raw log-probs (KL term); None: `logprobs`
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss (a scalar to backpropagate) and its statistics: 0-d tensors on the loss's device
    (sums, and `ratio_max` / `ratio_min`), which the step aggregates on the device and reads once
    per step. A token the learner's processed distribution no longer keeps (log-prob -inf: it
    fell outside top_p / top_k / min_p) has ratio 0 and no gradient."""
    kept = torch.isfinite(logprobs)  # (N,)
    lp = torch.where(kept, logprobs, torch.zeros_like(logprobs))  # (N,)
    log_ratio = (lp.detach() - behaviour_logprobs).clamp(max=20.0)  # (N,)
    ratio = torch.where(kept, torch.exp(log_ratio), torch.zeros_like(log_ratio))  # (N,)
    weight = ratio.clamp(max=clip)  # (N,) truncated importance weight, no gradient
    pg = -(weight * advantages * lp).sum() / normaliser
    loss = pg
    kl = torch.zeros((), device=logprobs.device)
    if ref_logprobs is not None:
        own = logprobs if raw_logprobs is None else raw_logprobs
        d = ref_logprobs - own  # (N,)
        k3 = torch.exp(d) - d - 1.0  # (N,) >= 0
        kl = k3.sum() / normaliser
        if kl_coef > 0.0:
            loss = loss + kl_coef * kl
    empty = not ratio.numel()
    zero = torch.zeros((), device=ratio.device)
    figures = torch.stack(
        [
            loss.detach(),
            pg.detach(),
            kl.detach(),
            ratio.sum(),
            zero if empty else ratio.max(),
            zero if empty else ratio.min(),
            (ratio > clip).sum().float(),
        ]
    )  # (7,) stays on the device: reading it here would stall the launch queue once per micro-batch
    stats = dict(zip(STATISTICS, figures.unbind(), strict=True))
    stats["tokens"] = torch.full((), float(logprobs.numel()), device=logprobs.device)
    return loss, stats
