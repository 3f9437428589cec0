"""Model FLOPs of one training step, for the model FLOPs utilisation (MFU) the benchmarks print.

Counted from the shapes, not measured; recomputation (LM-head chunks, activation checkpointing)
is not counted, so MFU is the useful share of the chip's peak:

    linear layers  2 FLOPs per weight per token forward; the backward costs 2 more for the input
                   gradient and, where the weight trains, 2 more for its gradient: 6 per weight
                   per token for full fine-tuning, 4 for frozen weights under LoRA (the adapters'
                   own FLOPs, rank r against hidden sizes of thousands, are left out)
    LM head        the same, but only over the positions that predict a loss token
    attention      causal, per sample of n tokens and per layer: QKᵀ and PV each n²/2 · d per
                   head, 2 FLOPs each, forward; the backward twice that (no weights to skip)

PEAK_BF16 is the dense bf16 tensor-core rate of an H100 / H200 SXM by the vendor's datasheet;
a square 8192³ bf16 product measured about 790 TFLOP/s on the H200 lent here.
"""

from __future__ import annotations

from typing import Any

PEAK_BF16 = 989.4e12


def step_flops(config: Any, batches: list[Any], *, lora: bool) -> float:
    """Model FLOPs of a step over `batches` (learner.packing.MicroBatch) for a decoder `config`."""
    h, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    body_weights = layers * (h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size)
    head_weights = h * config.vocab_size
    per_weight = 4 if lora else 6
    tokens = sum(int(b.input_ids.shape[1]) for b in batches)
    loss_tokens = sum(len(b.targets) for b in batches)
    square = sum(int(((b.cu_seqlens[1:] - b.cu_seqlens[:-1]).double() ** 2).sum()) for b in batches)
    attention = 3 * 2 * square * q * layers  # (fwd 2·n²·d per layer) × 3 with the backward
    return per_weight * (body_weights * tokens + head_weights * loss_tokens) + attention
