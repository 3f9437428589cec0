"""The sampling distribution a token was served from, rebuilt from the model's logits.

The engine draws each token from its logits after temperature, min_p, top_k and top_p, in
that order (vLLM's Sampler; docs/vllm.md), and records the log-prob under that processed
distribution. The learner rebuilds the same distribution from its own logits, so that the
importance ratio compares like with like: pi_processed(y) / mu_processed(y).

    z'  = z / T                                  temperature
    z'  = -inf where softmax(z')_v < min_p * max softmax(z')
    z'  = -inf outside the k largest             top_k (0: off)
    z'  = -inf outside the smallest head of the sorted distribution holding >= top_p of it
    lp  = log_softmax(z')[y]                     -inf when y fell outside the kept set

Only what differs from the model's own distribution is computed: temperature 1 and no
truncation cost nothing, and the sort top_p needs runs only on the rows that ask for it.
The gradient flows through z / T on the kept tokens; the masks carry none.

Imports only torch (learner/packing.py builds `Processing` from per-token parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class SamplingParams(Protocol):
    """What processing reads of ledger.sampling.Sampling."""

    @property
    def temperature(self) -> float: ...
    @property
    def top_p(self) -> float: ...
    @property
    def top_k(self) -> int: ...
    @property
    def min_p(self) -> float: ...


@dataclass
class Processing:
    """Per-token sampling parameters of N loss tokens, or of a chunk of them."""

    temperature: Tensor  # (N,) float32
    top_k: Tensor | None  # (N,) long, 0: off; None: off everywhere
    top_p: Tensor | None  # (N,) float32, 1: off; None: off everywhere
    min_p: Tensor | None  # (N,) float32, 0: off; None: off everywhere

    @staticmethod
    def of(params: Sequence[SamplingParams], device: torch.device) -> Processing | None:
        """The tensors for these tokens' parameters; None when every token was drawn from the
        model's own distribution (temperature 1, no truncation)."""
        temps = [p.temperature for p in params]
        ks = [max(int(p.top_k), 0) for p in params]
        ps = [float(p.top_p) for p in params]
        mins = [float(p.min_p) for p in params]
        if all(t == 1.0 for t in temps) and not any(ks) and min(ps, default=1.0) >= 1.0 and not any(mins):
            return None
        return Processing(
            temperature=torch.tensor(temps, dtype=torch.float32, device=device),
            top_k=torch.tensor(ks, dtype=torch.long, device=device) if any(ks) else None,
            top_p=torch.tensor(ps, dtype=torch.float32, device=device) if min(ps) < 1.0 else None,
            min_p=torch.tensor(mins, dtype=torch.float32, device=device) if any(mins) else None,
        )

    def rows(self, start: int, end: int) -> Processing:
        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[start:end]

        return Processing(self.temperature[start:end], cut(self.top_k), cut(self.top_p), cut(self.min_p))

    def apply(self, logits: Tensor) -> Tensor:
        """(n, V) float32 logits -> the processed logits, -inf outside each row's kept set."""
        z = logits / self.temperature[:, None]  # (n, V)
        if self.min_p is not None:
            with torch.no_grad():
                probs = torch.softmax(z, dim=-1)  # (n, V)
                drop = probs < probs.amax(dim=-1, keepdim=True) * self.min_p[:, None]
            z = z.masked_fill(drop, float("-inf"))
        if self.top_k is not None or self.top_p is not None:
            z = z.masked_fill(self._truncated(z.detach()), float("-inf"))
        return z

    def _truncated(self, z: Tensor) -> Tensor:
        """(n, V) bool: the tokens top_k and top_p remove (vLLM's sort-based rule)."""
        drop = torch.zeros_like(z, dtype=torch.bool)
        if self.top_k is not None:
            on = self.top_k > 0
            if bool(on.any()):
                kmax = int(self.top_k.max())
                kth = z[on].topk(min(kmax, z.shape[-1]), dim=-1).values  # (m, kmax) descending
                idx = (self.top_k[on].clamp(max=z.shape[-1]) - 1)[:, None]
                threshold = kth.gather(-1, idx)  # (m, 1) the k-th largest logit
                drop[on] = z[on] < threshold
        if self.top_p is not None:
            on = self.top_p < 1.0
            if bool(on.any()):
                rows = z[on].masked_fill(drop[on], float("-inf"))  # (m, V) after top_k
                sorted_z, order = rows.sort(dim=-1)  # ascending
                cum = sorted_z.softmax(dim=-1).cumsum(dim=-1)  # (m, V)
                cut = cum <= 1.0 - self.top_p[on][:, None]
                cut[:, -1] = False  # the most likely token always stays
                removed = torch.zeros_like(cut).scatter(-1, order, cut)
                drop[on] = drop[on] | removed
        return drop
