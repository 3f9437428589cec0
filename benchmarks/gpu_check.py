"""The one-shot GPU check of the learner's step: is the varlen path right, then how fast is it.

Written to be run once, on a CUDA machine, in well under 8 minutes on an H100:

    python benchmarks/gpu_check.py                 # --budget-s 400 by default
    python benchmarks/gpu_check.py --device cpu    # the same script at toy scale (a dry run)

1. Correctness. A Qwen3-0.6B-shaped model cut to 4 layers (bf16; 16 query and 8 key/value
   heads of 128): samples of different lengths (one of a single token) in one packed row through
   varlen_attn, against each sample alone through plain causal SDPA in bf16, both measured
   against each sample alone in float32 (the truth). It passes when varlen's error, in the
   log-probs and in the gradient of a weighted sum of them, is at most twice plain bf16's plus
   1e-3; and it is inconclusive unless the same row without its boundaries (every token seeing
   the samples before it) is ten times further off, i.e. unless the check could see a leak.
2. Throughput of learner_step's cases (16,384 tokens a step, 8,192 per forward), eager then
   compiled (each decoder layer: a graph that compiles in seconds): 2k and 8k context, packed
   (varlen) and single; then, as time allows, full rows, 16,384 tokens per forward, and LM-head
   chunks kept for the backward instead of recomputed.

Every case catches its own error (out of memory, an unsupported kernel, a compile failure),
prints it and goes on; no case starts after --budget-s. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic_step import BenchSample, build_model, compiled_body, run

from learner import attention
from learner.objective import chunked_logprobs
from learner.packing import MicroBatch, pack

CHECK_LENGTHS = (3000, 1200, 37, 1, 900, 250, 2000)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Case(NamedTuple):
    lora: bool  # rank-16 adapters on every linear layer of the body (the learner's default targets)
    compile: bool  # each decoder layer compiled (learner_step.compiled_body "layers")
    ctx: int
    layout: str  # learner_step's: packed | single | full
    micro: int  # tokens per forward
    recompute: bool = True  # LM-head chunks recomputed in the backward


# most wanted first: the targets' cases (2k and 8k, full weights and LoRA), then what might tune them
CASES = [
    Case(False, False, 2048, "packed", 8192),
    Case(False, False, 8192, "packed", 8192),
    Case(False, True, 2048, "packed", 8192),
    Case(False, True, 8192, "packed", 8192),
    Case(True, True, 2048, "packed", 8192),
    Case(True, True, 8192, "packed", 8192),
    Case(True, False, 2048, "packed", 8192),
    Case(False, True, 2048, "packed", 16384),
    Case(False, True, 8192, "packed", 16384),
    Case(False, True, 2048, "packed", 8192, recompute=False),
    Case(True, True, 2048, "packed", 16384),
    Case(True, True, 8192, "packed", 16384),
    Case(False, True, 2048, "single", 8192),
    Case(False, True, 8192, "single", 8192),
    Case(True, False, 8192, "packed", 8192),
    Case(False, True, 2048, "full", 8192),
]
QUICK_CASES = [
    Case(False, False, 256, "packed", 512),
    Case(False, False, 256, "single", 512),
    Case(True, False, 256, "packed", 512),
    Case(False, False, 256, "packed", 512, recompute=False),
    Case(True, True, 256, "packed", 512),
]


def with_lora(model: Any) -> Any:
    """`model` with LoRA adapters injected in place (as learner.train does); base weights frozen."""
    from peft import LoraConfig, get_peft_model

    get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, lora_dropout=0.0))
    return model


def logprobs(model: Any, mb: MicroBatch, *, packed: bool) -> torch.Tensor:
    """(N,) log-probs of the micro-batch's loss tokens: the packed row at once (with its boundaries
    if `packed`, else as one causal sequence), or each sample alone when `mb` holds one sample."""
    kwargs = mb.attention_kwargs if packed else {}
    hidden = model.model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False, **kwargs)
    hidden = hidden.last_hidden_state[0]  # (T, H)
    return chunked_logprobs(hidden[mb.predict_at], mb.targets, model.lm_head, 1024)[0].float()


def each_alone(model: Any, samples: list[BenchSample], device: torch.device) -> torch.Tensor:
    return torch.cat([logprobs(model, pack([s], len(s.tokens), device)[0], packed=False) for s in samples])


def gradient(model: Any, lp: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    ((lp * weights).sum() / len(weights)).backward()
    return [p.grad.double() for p in model.parameters() if p.grad is not None]


def relative(grads: list[torch.Tensor], truth: list[torch.Tensor]) -> float:
    diff = sum(float((g - t).pow(2).sum()) for g, t in zip(grads, truth, strict=True))
    return (diff / sum(float(t.pow(2).sum()) for t in truth)) ** 0.5


def check(device: torch.device, quick: bool) -> dict[str, Any]:
    dtype = torch.bfloat16
    probe = attention.check_flash(device, dtype)
    if quick:
        model = build_model("tiny", device, dtype, initializer_range=0.2)
        lengths: tuple[int, ...] = (60, 23, 1, 40)
    else:
        model = build_model("qwen3-0.6b", device, dtype, num_hidden_layers=4)
        lengths = CHECK_LENGTHS
    truth_model = copy.deepcopy(model).float()
    g = torch.Generator().manual_seed(0)
    samples = []
    for n in lengths:
        tokens = torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist()
        samples.append(BenchSample(tokens, [False] + [True] * (n - 1), [0.0] * n, 1.0))
    (row,) = pack(samples, sum(lengths), device)
    weights = torch.randn(len(row.targets), generator=g).to(device)

    truth = each_alone(truth_model, samples, device)
    truth_grads = gradient(truth_model, truth, weights)
    del truth_model
    varlen = logprobs(model, row, packed=True)
    varlen_grads = gradient(model, varlen, weights)
    plain = each_alone(model, samples, device)
    plain_grads = gradient(model, plain, weights)
    with torch.no_grad():
        leak = logprobs(model, row, packed=False)

    err = {
        name: float((lp.detach() - truth.detach()).abs().max())
        for name, lp in (("varlen", varlen), ("plain", plain), ("leak", leak))
    }
    grad_err = {"varlen": relative(varlen_grads, truth_grads), "plain": relative(plain_grads, truth_grads)}
    ok = err["varlen"] <= 2 * err["plain"] + 1e-3 and grad_err["varlen"] <= 2 * grad_err["plain"] + 1e-3
    sensitive = err["leak"] > 10 * err["varlen"]
    return {
        "verdict": ("pass" if sensitive else "inconclusive") if ok else "FAIL",
        "kernel": "varlen_attn" if attention.uses_flash(device, dtype) else "sdpa per sample",
        "probe": probe,  # learner.attention.check_flash: what the learner itself would choose
        "lengths": list(lengths),
        "logprob_max_abs_err_vs_fp32": err,
        "varlen_vs_plain_max_abs": float((varlen.detach() - plain.detach()).abs().max()),
        "grad_rel_err_vs_fp32": grad_err,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--budget-s", type=float, default=400.0, help="start no case after this many seconds")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case")
    args = ap.parse_args()
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    quick = not cuda  # on the CPU: toy shapes, to try the script itself
    torch.set_float32_matmul_precision("high")
    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "varlen_attn": str(inspect.signature(attention._varlen_attn)) if attention._varlen_attn else None,
        "varlen_call": {
            "causal": attention.CAUSAL_KWARGS,
            "gqa": attention.HAS_GQA,
            "scale": attention.HAS_SCALE,
        },
    }
    print(info, flush=True)
    try:
        info["check"] = check(device, quick)
    except Exception as e:
        traceback.print_exc()
        info["check"] = {"verdict": "error", "error": f"{type(e).__name__}: {str(e)[:500]}"}
    print({"check": info["check"]}, flush=True)
    if cuda:
        torch.cuda.empty_cache()

    kind, dtype = ("tiny", torch.float32) if quick else ("qwen3-0.6b", torch.bfloat16)
    per_step = 1024 if quick else 16384
    models: dict[tuple[bool, bool], tuple[Any, Any, Any]] = {}
    results = []
    for c in QUICK_CASES if quick else CASES:
        case: dict[str, Any] = c._asdict()
        if time.perf_counter() - t_start > args.budget_s:
            results.append({**case, "skipped": "over budget"})
            continue
        try:
            if (c.compile, c.lora) not in models:
                model = build_model(kind, device, dtype)
                if c.lora:
                    with_lora(model)
                model.train()
                params = [p for p in model.parameters() if p.requires_grad]
                opt = torch.optim.AdamW(params, lr=1e-5, fused=cuda)
                body = compiled_body(model, "layers") if c.compile else model.model
                models[c.compile, c.lora] = (model, opt, body)
            model, opt, body = models[c.compile, c.lora]
            r = run(
                model, opt, device, body, ctx=c.ctx, micro=c.micro, per_step=per_step, layout=c.layout,
                chunk=2048, warmup=2 if c.compile else 1, steps=args.steps, recompute=c.recompute,
            )  # fmt: skip
            case.update(r)
        except Exception as e:  # out of memory, an unsupported kernel, a compile failure: note it, go on
            traceback.print_exc()
            case["error"] = f"{type(e).__name__}: {str(e)[:500]}"
            if cuda:
                torch.cuda.empty_cache()
        case["at_s"] = round(time.perf_counter() - t_start, 1)
        print(case, flush=True)
        results.append(case)
    info["cases"] = results
    info["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
