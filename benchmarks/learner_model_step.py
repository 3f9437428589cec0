"""The learner's own step on a real checkpoint, on the CPU: tokens/s and peak memory per setting.

    python benchmarks/learner_step.py --model smollm2 [--threads 1,2] [--dtypes float32,bfloat16]
        [--targets all,attn] [--kl on,off] [--micro 2048] [--steps 3]

Unlike the synthetic runs of learner_step.py this builds `learner.train.Trainer` on the model
(LoRA, the learner's packing, processed log-probs at temperature 0.8, the KL term's base pass when
`--kl on`) and times `Trainer.step` on a batch shaped like live chat traffic: `--samples` samples
of `--prompt` prompt and `--completion` completion tokens (default 16 x (40 + 40) = 1,280
tokens, the ~1.3k tokens per step of the first real-model run). Each setting runs in a child
process, so its peak RSS (ru_maxrss) is its own. Prints one line per setting and a JSON summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
TARGETS = {"all": [*ATTENTION, "gate_proj", "up_proj", "down_proj"], "attn": ATTENTION}


def one(model_dir: str, setting: dict[str, Any], args: dict[str, Any], out: Any) -> None:
    import random

    import torch

    from learner.config import LearnerConfig
    from learner.samples import Sample
    from learner.train import Trainer
    from ledger.sampling import Sampling

    cfg = LearnerConfig(
        device="cpu",
        cpu_threads=setting["threads"],
        dtype=setting["dtype"],
        lora_targets=TARGETS[setting["targets"]],
        kl_coef=0.05 if setting["kl"] == "on" else 0.0,
        max_kl_base=0.0,
        max_entropy_rise=0.0,
        micro_batch_tokens=args["micro"],
        logprob_chunk=args["chunk"],
        keep_logits_mb=args["keep_logits_mb"],
        activation_checkpointing=args["checkpointing"] == "on",
        max_staleness=10**6,
    )
    t0 = time.perf_counter()
    trainer = Trainer(cfg, model_dir)
    load_s = time.perf_counter() - t0
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rng = random.Random(0)
    vocab = trainer.causal_lm.config.vocab_size
    params = Sampling(temperature=0.8)
    p, c = args["prompt"], args["completion"]

    def batch() -> list[Sample]:
        return [
            Sample(
                tokens=[rng.randrange(vocab) for _ in range(p + c)],
                loss_mask=[False] * p + [True] * c,
                behaviour_logprobs=[0.0] * p + [-3.0] * c,
                reward=float(i % 2),
                rubric="r",
                task="t",
                episode_id=f"e{i}",
                versions=["base"],
                sampling=[None] * p + [params] * c,
            )
            for i in range(args["samples"])
        ]

    trainer.step(batch())  # warmup
    times, cpu_times = [], []
    for _ in range(args["steps"]):
        t, cpu0 = time.perf_counter(), time.process_time()
        stats = trainer.step(batch())
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - cpu0)
    step_s = sorted(times)[len(times) // 2]
    step_cpu_s = sorted(cpu_times)[len(cpu_times) // 2]  # CPU time: steadier than wall on a busy machine
    total = args["samples"] * (p + c)
    out.put(
        {
            **setting,
            "load_s": round(load_s, 1),
            "step_s": round(step_s, 2),
            "step_cpu_s": round(step_cpu_s, 2),
            "loss_tokens_per_s": round(stats.tokens / step_s, 1),
            "tokens_per_s": round(total / step_s, 1),
            "loaded_rss_gb": round(loaded_rss, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "trainable_params": sum(q.numel() for q in trainer.params),
            "torch_threads": torch.get_num_threads(),
        }
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data-dir", default=".rlgw/bench")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--targets", default="all,attn")
    ap.add_argument("--kl", default="on")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=40)
    ap.add_argument("--completion", type=int, default=40)
    ap.add_argument("--micro", type=int, default=8192, help="micro_batch_tokens")
    ap.add_argument("--chunk", type=int, default=1024, help="logprob_chunk")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--checkpointing", default="off", help="activation checkpointing: on | off")
    ap.add_argument("--keep-logits-mb", type=int, default=1024, help="keep_logits_mb (0: recompute)")
    args = ap.parse_args(argv)

    from learner.model_import import resolve_model

    model_dir = str(resolve_model(args.model, Path(args.data_dir).resolve()))
    shared = {
        k: getattr(args, k)
        for k in (
            "samples",
            "prompt",
            "completion",
            "micro",
            "chunk",
            "steps",
            "keep_logits_mb",
            "checkpointing",
        )
    }
    results = []
    ctx = mp.get_context("spawn")
    for threads, dtype, targets, kl in itertools.product(
        [int(t) for t in args.threads.split(",")],
        args.dtypes.split(","),
        args.targets.split(","),
        args.kl.split(","),
    ):
        setting = {"threads": threads, "dtype": dtype, "targets": targets, "kl": kl}
        q = ctx.Queue()
        proc = ctx.Process(target=one, args=(model_dir, setting, shared, q))
        proc.start()
        proc.join()
        r = q.get() if not q.empty() else {**setting, "error": f"exit {proc.exitcode}"}
        print(r, flush=True)
        results.append(r)
    print(json.dumps({"model": model_dir, **shared, "results": results}))


if __name__ == "__main__":
    main()
