"""Training throughput of the learner's step: tokens/s for forward + backward + AdamW.

The step is the learner's own: samples packed without padding into rows of `ctx` tokens
(learner.packing), the body's final hidden states, log-probs in chunks over the LM head
(learner.objective.chunked_logprobs, never full-vocabulary logits for the whole row), the
truncated-importance-weight policy-gradient loss, AdamW. Full fine-tuning of a random model
built from a config (no downloads; needs only torch and transformers).

    CPU   the built-in tiny shape (Llama, hidden 64, 2 layers), float32
    CUDA  a Qwen3-0.6B-shaped model (28 layers, hidden 1024, vocab 151936), bf16, fused AdamW,
          at 2k and 8k context; gradient checkpointing from 8k on (--checkpointing on|off|auto);
          --compile adds runs with torch.compile on the model body (~100 s of compiling each)

Layouts: "packed" rows hold several samples (random lengths, a block-diagonal mask, which
SDPA serves with its memory-efficient kernel); "single" rows hold one sample each (plain
causal attention, the flash kernel). Every row is exactly `ctx` tokens so compiled shapes stay
static. Figures are printed per run and as one JSON line at the end.

    python benchmarks/learner_step.py [--quick] [--device cpu|cuda] [--compile]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learner.objective import chunked_logprobs, policy_gradient_loss
from learner.packing import pack


@dataclass
class BenchSample:  # the fields learner.packing reads from a learner.samples.Sample
    tokens: list[int]
    loss_mask: list[bool]
    behaviour_logprobs: list[float]
    advantage: float


def build_model(kind: str, device: torch.device, dtype: torch.dtype):  # -> PreTrainedModel
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
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device)


def make_rows(rng: random.Random, rows: int, ctx: int, vocab: int, layout: str) -> list[BenchSample]:
    """Samples that fill `rows` rows of exactly `ctx` tokens; a quarter of each is prompt."""
    out = []
    for _ in range(rows):
        left = ctx
        while left > 0:
            n = left if layout == "single" else min(left, rng.randint(ctx // 8, ctx // 2))
            if left - n < 16:
                n = left
            prompt = max(1, n // 4)
            out.append(
                BenchSample(
                    tokens=[rng.randrange(vocab) for _ in range(n)],
                    loss_mask=[False] * prompt + [True] * (n - prompt),
                    behaviour_logprobs=[0.0] * prompt + [-12.0] * (n - prompt),
                    advantage=rng.choice([-1.0, 1.0]),
                )
            )
            left -= n
    return out


def run(
    model,
    opt,
    device: torch.device,
    *,
    ctx: int,
    rows: int,
    layout: str,
    chunk: int,
    warmup: int,
    steps: int,
    body,
) -> dict:
    rng = random.Random(0)
    vocab = model.config.vocab_size
    batches = pack(make_rows(rng, rows, ctx, vocab, layout), ctx, device)
    assert all(b.input_ids.shape[1] == ctx for b in batches), "rows must be exactly ctx tokens"
    n_loss = sum(len(b.targets) for b in batches)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for b in batches:
            hidden = body(input_ids=b.input_ids, position_ids=b.position_ids, attention_mask=b.mask)
            hidden = hidden.last_hidden_state[0]  # (T, H)
            logps, _ = chunked_logprobs(hidden[b.predict_at], b.targets, model.lm_head, chunk)  # (N,)
            loss, _ = policy_gradient_loss(
                logps, b.behaviour, b.advantages, clip=2.0, normaliser=float(n_loss)
            )
            loss.backward()
            loss_sum += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss_sum

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    tokens = rows * ctx
    out = {
        "ctx": ctx,
        "rows": rows,
        "layout": layout,
        "tokens_per_step": tokens,
        "step_s": round(dt, 4),
        "tokens_per_s": round(tokens / dt),
        "loss_tokens_per_s": round(n_loss / dt),
        "warmup_s": round(warm_s, 1),
    }
    if device.type == "cuda":
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and shapes (a smoke run)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--compile", action="store_true", help="also run with torch.compile on the body")
    ap.add_argument("--checkpointing", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--contexts", default=None, help="comma-separated contexts (default: per device)")
    ap.add_argument("--tokens-per-step", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=2048, help="tokens per LM-head chunk")
    ap.add_argument("--layouts", default="packed,single")
    args = ap.parse_args()

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    torch.set_float32_matmul_precision("high")
    if cuda:
        kind, dtype = "qwen3-0.6b", torch.bfloat16
        contexts = [2048] if args.quick else [2048, 8192]
        per_step = args.tokens_per_step or 16384
    else:
        kind, dtype = "tiny", torch.float32
        contexts = [256] if args.quick else [512, 2048]
        per_step = args.tokens_per_step or (1024 if args.quick else 4096)
    if args.contexts:
        contexts = [int(c) for c in args.contexts.split(",")]
    warmup, steps = (1, 2) if args.quick else (2, 5)
    layouts = args.layouts.split(",")
    compiles = [False, True] if args.compile else [False]

    results = []
    for compiled in compiles:
        model = build_model(kind, device, dtype)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
        body = torch.compile(model.model) if compiled else model.model
        for ctx in contexts:
            ckpt = args.checkpointing == "on" or (args.checkpointing == "auto" and cuda and ctx >= 8192)
            if ckpt:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_disable()
            for layout in layouts:
                rows = max(1, per_step // ctx)
                try:
                    r = run(
                        model, opt, device, ctx=ctx, rows=rows, layout=layout, chunk=args.chunk,
                        warmup=warmup, steps=steps, body=body,
                    )  # fmt: skip
                except torch.cuda.OutOfMemoryError:
                    r = {"ctx": ctx, "rows": rows, "layout": layout, "error": "out of memory"}
                    torch.cuda.empty_cache()
                r.update(model=kind, compile=compiled, checkpointing=ckpt, dtype=str(dtype).split(".")[-1])
                print(r, flush=True)
                results.append(r)
        del model, opt, body
        if cuda:
            torch.cuda.empty_cache()
    info = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "results": results,
    }
    print(json.dumps(info))


if __name__ == "__main__":
    main()
