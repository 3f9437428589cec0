"""Attention over packed rows: each sample attends causally to itself only, with no mask.

A packed row holds samples back to back; `cu_seqlens` (N+1,) int32 marks where each one starts
(and the row's end) and `max_len` is the longest. The old path built a dense (1, 1, T, T) bool
block-diagonal mask: O(T^2) memory, and a mask keeps SDPA off its flash kernel (measured on an
H100, benchmarks/results/learner_step_h100.md: packed rows ran at 16k tokens/s where plain
causal rows ran at 17.6k eager and 36k compiled).

`register()` adds this function to transformers' AttentionInterface as "rlgw_varlen"; a model
loaded with `attn_implementation=VARLEN` then builds no mask at all (transformers builds masks
only for the implementations in its *mask* interface, and this one is not there) and hands each
layer's attention the forward's keyword arguments. The boundaries travel in the names
transformers' own flash-attention path reads: `cu_seq_lens_q/_k` and `max_length_q/_k`.

    CUDA, bf16/fp16   torch.nn.attention.varlen.varlen_attn: FlashAttention's varlen kernel, the
                      cost of N separate causal attentions, O(T) memory, no host sync
    anywhere else     SDPA on each sample's slice, causal: the same maths, exactly (CPU: the
                      tests and the embedded demo; CUDA float32: flash has no float32 kernel).
                      It reads the boundaries on the host, a sync per layer on CUDA

Without boundaries (a plain forward, e.g. recomputing one sample's log-probs) a row is one
causal sequence and transformers' SDPA function serves it. A 2D padding mask is dropped by
transformers for an implementation outside its mask interface: rows must hold no padding.

varlen_attn's signature changed between torch releases, so the call is picked once, at import,
from `inspect.signature`. The forms seen in public copies of torch/nn/attention/varlen.py:
  - the earliest: `(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None)`:
    equal head counts only, the default scale only;
  - later: keyword-only `scale` and `window_size` ((-1, 0) means causal; `is_causal` is gone);
  - 2.13 (installed here): adds `enable_gqa`, `seqused_k`, `block_table`, `num_splits`.
Which of these 2.11 has was not checked here (no CUDA build at hand); benchmarks/gpu_check.py
prints the signature it found. Where `enable_gqa` is missing, key/value heads are repeated to
the query heads; where `scale` is missing, the query is pre-multiplied so that the default
1/sqrt(D) gives the model's scaling. Because none of this ran on a GPU here, `check_flash()`
runs varlen_attn once, before training, on two small packed samples against SDPA on each
alone: a varlen_attn that fails or disagrees leaves the learner on SDPA per sample (correct,
slower) with a warning, instead of training on wrong attention.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

VARLEN = "rlgw_varlen"  # the attn_implementation name a model is loaded with
FLASH_DTYPES = (torch.bfloat16, torch.float16)

_varlen_attn: Callable[..., Any] | None
try:
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:  # torch < 2.9
    _varlen_attn = None


def _varlen_options() -> tuple[dict[str, Any], bool, bool]:
    """(keyword arguments for a causal call, whether it takes `enable_gqa`, whether it takes `scale`)."""
    if _varlen_attn is None:
        return {}, False, False
    params = inspect.signature(_varlen_attn).parameters
    if "window_size" in params:
        causal: dict[str, Any] = {"window_size": (-1, 0)}
    elif "is_causal" in params:
        causal = {"is_causal": True}
    else:
        raise RuntimeError(f"unknown varlen_attn signature {inspect.signature(_varlen_attn)}")
    return causal, "enable_gqa" in params, "scale" in params


CAUSAL_KWARGS, HAS_GQA, HAS_SCALE = _varlen_options()


def cu_seqlens(lengths: list[int], device: torch.device) -> Tensor:
    """(N+1,) int32: 0, then the running total of `lengths` (flash's boundary format)."""
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    return torch.tensor(bounds, dtype=torch.int32, device=device)


def varlen_kwargs(cu: Tensor, max_len: int) -> dict[str, Any]:
    """The forward's keyword arguments that carry a packed row's boundaries to every layer."""
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_len, "max_length_k": max_len}


_sdpa_attention: Callable[..., tuple[Tensor, None]] | None = None  # transformers' own, set by register()


def register() -> str:
    """Make VARLEN a valid `attn_implementation` (idempotent); returns the name."""
    global _sdpa_attention
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _sdpa_attention = sdpa_attention_forward
    AttentionInterface.register(VARLEN, varlen_attention)
    return VARLEN


_checked: dict[tuple[str, torch.dtype], bool] = {}  # check_flash's verdicts


def uses_flash(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether packed rows on `device` in `dtype` go to varlen_attn (else: SDPA per sample)."""
    possible = _varlen_attn is not None and device.type == "cuda" and dtype in FLASH_DTYPES
    return possible and _checked.get((device.type, dtype), True)


def check_flash(device: torch.device, dtype: torch.dtype) -> bool:
    """Run varlen_attn once on two packed samples (grouped-query heads) and compare it with SDPA
    on each sample alone; a failure or a mismatch turns it off for (device, dtype). Call before
    training, outside any compiled region. Returns whether packed rows will use it."""
    if not uses_flash(device, dtype):
        return False
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(24, h, 64, generator=g).to(device, dtype) for h in (4, 2, 2))  # (T, H, D)
    cu = cu_seqlens([10, 14], device)
    try:
        got, want = _flash(q, k, v, cu, 14, 0.125).float(), _per_sample(q, k, v, cu, 14, 0.125).float()
        error = float((got - want).abs().max())
        ok = error < 0.05  # bf16 rounding is ~1e-2 at these magnitudes; a leak or wrong mask is ~1
        if not ok:
            log.warning(
                "varlen_attn disagrees with SDPA (max error %.3f): packed rows use SDPA per sample", error
            )
    except Exception as exc:  # an unknown signature or a kernel this GPU lacks
        ok = False
        log.warning("varlen_attn failed (%r): packed rows use SDPA per sample", exc)
    _checked[(device.type, dtype)] = ok
    return ok


def varlen_attention(
    module: torch.nn.Module,
    query: Tensor,  # (B, Hq, T, D)
    key: Tensor,  # (B, Hkv, T, D)
    value: Tensor,  # (B, Hkv, T, D)
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    cu_seq_lens_q: Tensor | None = None,  # (N+1,) int32 over the B*T tokens, row after row
    cu_seq_lens_k: Tensor | None = None,  # the same (self-attention, no cache)
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention-function contract: returns ((B, T, Hq, D), no weights)."""
    if cu_seq_lens_q is None or attention_mask is not None:
        assert _sdpa_attention is not None, "learner.attention.register() sets it"
        return _sdpa_attention(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if sliding_window is not None or dropout > 0.0:
        raise NotImplementedError("packed attention: no sliding window, no attention dropout")
    if key.shape[2] != query.shape[2]:  # the keys' boundaries are the queries' (cu_seq_lens_k unread)
        raise ValueError("packed attention is self-attention over packed rows (no KV cache)")
    b, hq, t, d = query.shape
    scale = scaling if scaling is not None else 1.0 / math.sqrt(d)
    q = query.transpose(1, 2).reshape(b * t, hq, d)  # (B*T, Hq, D)
    k = key.transpose(1, 2).reshape(b * t, key.shape[1], d)  # (B*T, Hkv, D)
    v = value.transpose(1, 2).reshape(b * t, value.shape[1], d)  # (B*T, Hkv, D)
    attend = _flash if uses_flash(q.device, q.dtype) else _per_sample
    max_len = max_length_q if max_length_q is not None else b * t
    out = attend(q, k, v, cu_seq_lens_q, max_len, scale)  # (B*T, Hq, D)
    return out.reshape(b, t, hq, d), None


def _flash(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int, scale: float) -> Tensor:
    assert _varlen_attn is not None
    options: dict[str, Any] = dict(CAUSAL_KWARGS)
    if k.shape[1] != q.shape[1]:
        if HAS_GQA:
            options["enable_gqa"] = True
        else:
            k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    if HAS_SCALE:
        options["scale"] = scale
    elif scale != 1.0 / math.sqrt(q.shape[-1]):
        q = q * (scale * math.sqrt(q.shape[-1]))
    out = _varlen_attn(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, max_len, max_len, **options)
    return out  # type: ignore[return-value]  # a tensor: no return_aux asked for


def _per_sample(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int, scale: float) -> Tensor:
    bounds = cu.tolist()
    if bounds[0] != 0 or bounds[-1] != q.shape[0]:
        raise ValueError(f"cu_seqlens {bounds[0]}..{bounds[-1]} do not cover the row's {q.shape[0]} tokens")
    gqa = k.shape[1] != q.shape[1]
    outs = []
    for start, end in itertools.pairwise(bounds):
        if end > start:  # (n, H, D) -> (H, n, D): SDPA's head dimension is the third from last
            qs, ks, vs = (x[start:end].transpose(0, 1) for x in (q, k, v))
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=gqa)
            outs.append(o.transpose(0, 1))  # (n, Hq, D)
    return torch.cat(outs)
