"""Training throughput of the learner's step: tokens/s for forward + backward + AdamW.

The step is the learner's own: samples packed without padding into forwards of up to
`--micro-batch-tokens` (learner.packing), each sample attending to itself only (learner.attention:
FlashAttention's varlen kernel on CUDA in bf16, SDPA per sample on the CPU), the body's final
hidden states, log-probs in chunks over the LM head (learner.objective.chunked_logprobs, never
full-vocabulary logits for the whole row), the truncated-importance-weight policy-gradient loss,
AdamW; no host sync inside a step (the loss is never read). Full fine-tuning of a random model
built from a config (no downloads; needs only torch and transformers).

    CPU   the built-in tiny shape (Llama, hidden 64, 2 layers), float32
    CUDA  a Qwen3-0.6B-shaped model (28 layers, hidden 1024, vocab 151936), bf16, fused AdamW,
          at 2k and 8k context; --checkpointing on adds activation checkpointing (off by
          default: with varlen attention a forward's memory depends on its tokens, not on the
          context); --compile adds runs with torch.compile (--compile-scope layers: each decoder
          layer, one graph that all layers share, compiles in seconds; body: the whole body,
          ~100 s of compiling per shape on an H100)

Layouts, each a fixed row length per context so that compiled shapes stay static (packed rows'
boundaries vary: torch.compile makes them dynamic at its first recompile, in the warmup):
    packed  samples of random lengths (ctx/8 to ctx/2) back to back in rows of exactly
            `micro` tokens: the learner's varlen packing
    full    samples of exactly ctx tokens, micro // ctx of them per row (a batch of full rows)
    single  one sample of exactly ctx tokens per forward
Figures are printed per run and as one JSON line at the end.

    python benchmarks/learner_step.py [--quick] [--device cpu|cuda] [--compile]
    python benchmarks/learner_step.py --model smollm2 [...]   the learner's own step on a real
                                      checkpoint, on the CPU (benchmarks/learner_model_step.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic_step import LAYOUTS, build_model, compiled_body, run


def main() -> None:
    if "--model" in sys.argv:  # a real checkpoint through the learner's Trainer
        from learner_model_step import main as model_main

        model_main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and shapes (a smoke run)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--compile", action="store_true", help="also run with torch.compile")
    ap.add_argument("--compile-scope", default="layers", choices=["layers", "body"])
    ap.add_argument("--checkpointing", default="off", choices=["on", "off"])
    ap.add_argument("--contexts", default=None, help="comma-separated contexts (default: per device)")
    ap.add_argument("--micro-batch-tokens", type=int, default=None, help="tokens per forward (packed, full)")
    ap.add_argument("--tokens-per-step", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=2048, help="tokens per LM-head chunk")
    ap.add_argument(
        "--chunk-recompute", default="on", choices=["on", "off"], help="checkpoint LM-head chunks"
    )
    ap.add_argument("--layouts", default="packed,single", help=f"comma-separated, of {','.join(LAYOUTS)}")
    args = ap.parse_args()

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    torch.set_float32_matmul_precision("high")
    if cuda:
        kind, dtype = "qwen3-0.6b", torch.bfloat16
        contexts = [2048] if args.quick else [2048, 8192]
        per_step = args.tokens_per_step or 16384
        micro = args.micro_batch_tokens or 8192
    else:
        kind, dtype = "tiny", torch.float32
        contexts = [256] if args.quick else [512, 2048]
        per_step = args.tokens_per_step or (1024 if args.quick else 4096)
        micro = args.micro_batch_tokens or (512 if args.quick else 2048)
    if args.contexts:
        contexts = [int(c) for c in args.contexts.split(",")]
    warmup, steps = (1, 2) if args.quick else (2, 5)
    layouts = args.layouts.split(",")
    compiles = [False, True] if args.compile else [False]

    results = []
    for compiled in compiles:
        model = build_model(kind, device, dtype)
        model.train()
        if args.checkpointing == "on":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
        body = compiled_body(model, args.compile_scope) if compiled else model.model
        for ctx in contexts:
            for layout in layouts:
                case = {"ctx": ctx, "layout": layout}
                try:
                    r = run(
                        model, opt, device, body, ctx=ctx, micro=max(micro, ctx), per_step=per_step,
                        layout=layout, chunk=args.chunk, warmup=warmup, steps=steps,
                        recompute=args.chunk_recompute == "on",
                    )  # fmt: skip
                except torch.cuda.OutOfMemoryError:
                    r = {**case, "error": "out of memory"}
                    torch.cuda.empty_cache()
                r.update(
                    model=kind,
                    compile=args.compile_scope if compiled else False,
                    checkpointing=args.checkpointing == "on",
                    dtype=str(dtype).split(".")[-1],
                )
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
