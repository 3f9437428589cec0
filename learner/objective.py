"""The objective: token-level policy gradient with truncated importance weights.

For each loss token t (a completion token), with the learner's log-prob l_t = log pi(y_t | ...),
the behaviour log-prob b_t recorded when it was served, and the sample's advantage A_t:

    rho_t  = exp(l_t - b_t)                    importance ratio, learner vs server
    w_t    = min(rho_t, clip)                  truncated importance weight (no gradient)
    loss   = -sum_t w_t * A_t * l_t / N        N: loss tokens of the whole step (token-level mean)
           + kl_coef * sum_t k3_t / N          optional KL to the base model, k3 estimator:
    k3_t   = exp(r_t - l_t) - (r_t - l_t) - 1  r_t: the base model's log-prob

The gradient of the first term is w_t * A_t * grad l_t: the off-policy policy gradient with the
importance weight truncated at `clip` (truncated importance sampling). Truncation bounds the
variance that stale or mismatched behaviour log-probs would otherwise add; it biases the
estimate only for tokens with rho > clip, whose share is reported as `clipped`. Why a
correction at all: the learner is a version or more ahead of the server (staleness), and
bf16 serving differs from the learner's log-probs by up to ~0.2 nats per token (docs/tolerances.md),
i.e. ratios of 0.8-1.2 per token even on-policy. clip = 2 keeps on-policy noise unclipped.

Log-probs are computed from the final hidden states in chunks of `chunk` tokens through the
LM head, each chunk under activation checkpointing: full-vocabulary float logits exist for
one chunk at a time, in the forward and in the backward pass. The price is a second LM-head
matmul per chunk in the backward; `recompute=False` keeps every chunk's logits instead
(n x V x 6 bytes each in bf16: ~5.6 GB for 6k loss tokens at Qwen3's vocabulary of 152k), for
benchmarks/learner_step.py to measure what the recomputation costs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

STATISTICS = ("loss", "pg_loss", "kl", "ratio_sum", "ratio_max", "clipped")  # besides "tokens"


def chunked_logprobs(
    hidden: Tensor,  # (N, H) final hidden states at the positions that predict `targets`
    targets: Tensor,  # (N,) token ids
    lm_head: Callable[[Tensor], Tensor],  # (n, H) -> (n, V); a plain Linear or a LoRA-wrapped one
    chunk: int = 1024,
    *,
    recompute: bool = True,  # checkpoint each chunk (module docstring)
) -> tuple[Tensor, Tensor]:
    """Log-prob of each target (with gradient) and the entropy at each position (without)."""
    logps, ents = [], []
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start : start + chunk], targets[start : start + chunk]
        if recompute and torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_chunk_logprobs, h, y, lm_head, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(h, y, lm_head)
        logps.append(lp)
        ents.append(ent)
    if not logps:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(ents)


def _chunk_logprobs(h: Tensor, y: Tensor, lm_head: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    logits = lm_head(h).float()  # (n, V), float32 for one chunk only
    logz = torch.logsumexp(logits, dim=-1)  # (n,)
    lp = logits.gather(-1, y[:, None])[:, 0] - logz  # (n,)
    with torch.no_grad():
        p = torch.softmax(logits, dim=-1)
        ent = logz - (p * logits).sum(-1)  # (n,)  H = logZ - E_p[logit]
    return lp, ent.detach()


def policy_gradient_loss(
    logprobs: Tensor,  # (N,) learner log-probs of the loss tokens, with gradient
    behaviour_logprobs: Tensor,  # (N,) recorded when served
    advantages: Tensor,  # (N,) the sample's advantage, repeated on each of its tokens
    *,
    clip: float,
    normaliser: float,  # N of the whole step (micro-batches share one normaliser)
    ref_logprobs: Tensor | None = None,  # (N,) base-model log-probs, for the KL term
    kl_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss (a scalar to backpropagate) and its statistics: 0-d tensors on the loss's device
    (sums, and `ratio_max`), which the step aggregates on the device and reads once per step."""
    log_ratio = (logprobs.detach() - behaviour_logprobs).clamp(max=20.0)  # (N,)
    ratio = torch.exp(log_ratio)  # (N,)
    weight = ratio.clamp(max=clip)  # (N,) truncated importance weight, no gradient
    pg = -(weight * advantages * logprobs).sum() / normaliser
    loss = pg
    kl = torch.zeros((), device=logprobs.device)
    if ref_logprobs is not None and kl_coef > 0.0:
        d = ref_logprobs - logprobs  # (N,)
        k3 = torch.exp(d) - d - 1.0  # (N,) >= 0
        kl = k3.sum() / normaliser
        loss = loss + kl_coef * kl
    ratio_max = ratio.max() if ratio.numel() else torch.zeros((), device=ratio.device)
    figures = torch.stack(
        [loss.detach(), pg.detach(), kl.detach(), ratio.sum(), ratio_max, (ratio > clip).sum().float()]
    )  # (6,) stays on the device: reading it here would stall the launch queue once per micro-batch
    stats = dict(zip(STATISTICS, figures.unbind(), strict=True))
    stats["tokens"] = torch.full((), float(logprobs.numel()), device=logprobs.device)
    return loss, stats
