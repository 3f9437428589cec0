"""How the learner loads a model: the dtype it trains in and the attention that reads packed
rows' boundaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from learner.attention import register


def auto_dtype(device: torch.device, model_dir: Path) -> torch.dtype:
    """bfloat16 on CUDA; on the CPU the dtype the engine serves the folder in (its own,
    gateway/engine.py) when that is bfloat16 and the CPU computes in it natively (AVX512-BF16 or
    AMX: 1.4x the float32 step on SmolLM2-135M, benchmarks/learner_model_step.py), else float32
    (the tiny model's float32 log-probs then match the engine's exactly). LoRA weights stay
    float32 either way (peft keeps adapters in float32 over a bfloat16 base)."""
    if device.type == "cuda":
        return torch.bfloat16
    try:
        config = json.loads((model_dir / "config.json").read_text())
        flags = Path("/proc/cpuinfo").read_text()
    except (OSError, ValueError):
        return torch.float32
    served = config.get("dtype") or config.get("torch_dtype")
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    return torch.bfloat16 if served == "bfloat16" and native else torch.float32


def load_causal_lm(model_dir: Path, dtype: torch.dtype) -> Any:
    """A transformers causal LM whose attention reads packed rows' boundaries (learner/attention.py)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=register())
