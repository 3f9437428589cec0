"""The learner's step on synthetic data: a random model, packed batches of random samples, one
training step timed; shared by learner_step.py and gpu_check.py (needs only torch and
transformers, and the learner's attention, packing and objective)."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flops import PEAK_BF16, step_flops

from learner.attention import register
from learner.objective import chunked_logprobs, policy_gradient_loss
from learner.packing import MicroBatch, pack

LAYOUTS = ("packed", "full", "single")


@dataclass
class BenchSample:  # the fields learner.packing reads from a learner.samples.Sample
    tokens: list[int]
    loss_mask: list[bool]
    behaviour_logprobs: list[float]
    advantage: float


def build_model(kind: str, device: torch.device, dtype: torch.dtype, **shape: Any):  # -> PreTrainedModel
    """A random model with the varlen attention; `shape` overrides config fields (e.g. layers)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen3Config

    config: PretrainedConfig
    if kind == "tiny":
        config = LlamaConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=32,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
        )
    else:  # Qwen3-0.6B's shape
        config = Qwen3Config(
            vocab_size=151936,
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=40960,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            tie_word_embeddings=True,
        )
    for name, value in shape.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    with device:  # initialise on the device: a 0.6B model's random init is slow on the host
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=register())
    return model


def row_lengths(rng: random.Random, layout: str, ctx: int, micro: int, per_step: int) -> list[list[int]]:
    """The sample lengths of each row of one step; every row of a layout has one length."""
    if layout == "single":
        return [[ctx] for _ in range(max(1, per_step // ctx))]
    if layout == "full":
        per_row = max(1, micro // ctx)
        return [[ctx] * per_row for _ in range(max(1, per_step // (per_row * ctx)))]
    rows = []
    for _ in range(max(1, per_step // micro)):
        lengths, left = [], micro
        while left > 0:
            n = min(left, rng.randint(ctx // 8, ctx // 2))
            if left - n < 16:
                n = left
            lengths.append(n)
            left -= n
        rows.append(lengths)
    return rows


def make_batches(
    rng: random.Random, layout: str, ctx: int, micro: int, per_step: int, vocab: int, device: torch.device
) -> list[MicroBatch]:
    """One step's micro-batches, packed by the learner's own packing; a quarter of each sample is prompt."""
    rows = row_lengths(rng, layout, ctx, micro, per_step)
    samples = []
    for n in (n for row in rows for n in row):
        prompt = max(1, n // 4)
        samples.append(
            BenchSample(
                tokens=[rng.randrange(vocab) for _ in range(n)],
                loss_mask=[False] * prompt + [True] * (n - prompt),
                behaviour_logprobs=[0.0] * prompt + [-12.0] * (n - prompt),
                advantage=rng.choice([-1.0, 1.0]),
            )
        )
    batches = pack(samples, sum(rows[0]), device)
    assert [b.cu_seqlens.numel() - 1 for b in batches] == [len(r) for r in rows], "packing split a row"
    return batches


def train_step(
    model: Any,
    opt: torch.optim.Optimizer,
    body: Callable[..., Any],
    batches: list[MicroBatch],
    chunk: int,
    recompute: bool = True,
) -> None:
    """The learner's step on `batches` (full fine-tuning, no KL): nothing read back on the host."""
    n_loss = float(sum(len(b.targets) for b in batches))
    opt.zero_grad(set_to_none=True)
    for b in batches:
        hidden = body(
            input_ids=b.input_ids, position_ids=b.position_ids, use_cache=False, **b.attention_kwargs
        )
        hidden = hidden.last_hidden_state[0]  # (T, H)
        logps = chunked_logprobs(
            hidden[b.predict_at], b.targets, model.lm_head, chunk, recompute=recompute
        ).logprobs
        loss, _ = policy_gradient_loss(logps, b.behaviour, b.advantages, clip=2.0, normaliser=n_loss)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def run(
    model: Any,
    opt: torch.optim.Optimizer,
    device: torch.device,
    body: Callable[..., Any],
    *,
    ctx: int,
    micro: int,
    per_step: int,
    layout: str,
    chunk: int,
    warmup: int,
    steps: int,
    recompute: bool = True,
) -> dict[str, Any]:
    batches = make_batches(random.Random(0), layout, ctx, micro, per_step, model.config.vocab_size, device)
    tokens = sum(b.input_ids.shape[1] for b in batches)
    n_loss = sum(len(b.targets) for b in batches)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        train_step(model, opt, body, batches, chunk, recompute)
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, body, batches, chunk, recompute)
    sync()
    dt = (time.perf_counter() - t0) / steps
    out = {
        "ctx": ctx,
        "layout": layout,
        "row_tokens": batches[0].input_ids.shape[1],
        "forwards": len(batches),
        "tokens_per_step": tokens,
        "step_s": round(dt, 4),
        "tokens_per_s": round(tokens / dt),
        "loss_tokens_per_s": round(n_loss / dt),
        "warmup_s": round(warm_s, 1),
        "chunk_recompute": recompute,
    }
    lora = any(not p.requires_grad for p in model.parameters())  # frozen base weights: LoRA
    flops = step_flops(model.config, batches, lora=lora) / dt
    out.update(lora=lora, model_tflops=round(flops / 1e12, 3))
    if device.type == "cuda":
        out["mfu"] = round(flops / PEAK_BF16, 3)  # of the dense bf16 peak (benchmarks/flops.py)
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def compiled_body(model: Any, scope: str) -> Callable[..., Any]:
    """`layers`: each decoder layer compiled in place (one graph, reused by every layer); `body`:
    the whole body as one graph."""
    if scope == "body":
        return torch.compile(model.model)  # type: ignore[no-any-return]
    for layer in model.model.layers:
        layer.compile()
    return model.model  # type: ignore[no-any-return]
