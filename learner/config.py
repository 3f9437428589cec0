"""The `[learner]` config section: the base model, LoRA, the objective, batching, checkpoints
and publishing. `rlgw` assembles it with the other packages' sections into one `Settings`.
Imports nothing heavy (a test enforces it): torch loads in the modules that train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from ledger.config import LedgerConfig, Section


class LearnerConfig(Section):
    model: str | None = None
    """Base model: a local HF folder (None in `rlgw demo`: a built-in tiny model)."""
    full_finetune: bool = False
    """Train all weights instead of a LoRA adapter (docs/full-weights.md)."""
    fsdp: bool = False
    """Under torchrun, shard the full model's weights, gradients and AdamW state across the ranks
    with torch FSDP2 (full fine-tuning of models that do not fit one device; docs/scaling.md)."""
    serve_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """dtype full-weight versions are saved in for serving (auto: the base folder's dtype)."""
    lora_rank: int = 8
    """LoRA rank."""
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Modules LoRA adapts (tiny random models also need lm_head to learn)."""
    lr: float = 3e-4
    """AdamW learning rate. The defaults of this section are for a pretrained model, chosen on
    SmolLM2-135M-Instruct learning a new rubric on the CPU without tuning (LoRA r 8 on every
    linear layer but lm_head, lr 3e-4, 32 episodes a step, KL 0.1, clip 2:
    docs/learning.md)."""
    batch_episodes: int = 32
    """Scored episodes per training step."""
    steps_per_version: int = 4
    """Optimizer steps between published versions."""
    clip: float = 2.0
    """Importance weights are truncated at this value."""
    kl_coef: float = 0.1
    """Weight of the KL penalty to the base model (0: off). The defaults of this section are for a
    pretrained model; the built-in tiny random model runs with KL and the guards off
    (learner.tiny_model.TINY_LEARNER)."""
    max_kl_base: float = 0.5
    """A version whose mean KL to the base model exceeds this (nats per loss token) is held back,
    never published (learner/stats.py). 0: no limit."""
    max_entropy_rise: float = 1.0
    """A version whose mean entropy exceeds the base model's on the same tokens by more than this
    (nats) is held back, never published (learner/stats.py). 0: no limit."""
    max_staleness: int = 4
    """Samples served more than this many versions ago are skipped."""
    device: str = "auto"
    """auto | cpu | cuda."""
    cpu_threads: int = 0
    """Torch threads when training on the CPU (0: torch's default). Beside a vLLM-CPU engine on
    the same machine, 1 keeps training off the engine's core (the embedded stack sets it)."""
    logprob_chunk: int = 1024
    """Tokens per chunk when computing log-probs over the LM head."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm (0: off)."""
    micro_batch_tokens: int = 8192
    """Tokens packed into one forward pass (no padding); a step accumulates several. Memory grows
    linearly with it (varlen attention, no (T, T) mask) by the activations the backward keeps,
    estimated from the layer shapes (not measured) at ~1.8 MB a token for Qwen3-0.6B in bf16
    (14 GB at 8192) and ~6.5 MB for a 7B (53 GB): 8192 is near the limit of an 80 GB GPU for a
    7B. A larger row gains little: what a forward costs besides its matmuls (kernel launches,
    reading the weights) is already small next to 8192 tokens' worth of them."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward instead of keeping them: on
    SmolLM2 (CPU, 1,920 tokens a step) peak RSS 3.5 -> 2.1 GB, step 10 -> 29 s on a loaded machine
    (docs/learning.md). Off by default: on this CPU the learner's speed, not its
    memory, bounds how fast the loop learns."""
    keep_logits_mb: int = 1024
    """A micro-batch's float32 LM-head logits up to this size are kept for the backward; larger
    ones are recomputed chunk by chunk in the backward (learner/objective.py). 0: always recompute."""
    max_sample_tokens: int = 4096
    """Samples longer than this are skipped (counted)."""
    baseline_alpha: float = 0.1
    """Step size of the running reward baseline per (rubric, task key)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Training dtype of the base weights (auto: bfloat16 on CUDA; on the CPU bfloat16 for a
    bfloat16 folder where the CPU has bf16 instructions, else float32: learner.model_load.auto_dtype)."""
    checkpoint_dir: Path | None = None
    """Where versions are saved. Default: <data_dir>/learner."""
    keep_versions: int = 0
    """Complete versions kept on disk (0: all). Versions the gateway reports serving, canaried,
    pinned, queued, or one rollback away are kept too; with the gateway unreachable none go."""
    poll_interval_s: float = 2.0
    """Wait between reads when there are too few new scored episodes for a step."""
    admin_url: str | None = None
    """Gateway base URL for publishing versions (POST {admin_url}/admin/versions)."""
    admin_key: str | None = None
    """Admin bearer key for the gateway's admin API."""
    publish_retries: int = 5
    """Attempts to publish a version when the gateway answers with a transient error."""


class LearnerSettings(Protocol):
    """What the learner reads of the assembled config (`rlgw.config.Settings` has it)."""

    data_dir: Path
    learner: LearnerConfig
    ledger: LedgerConfig  # its holdout_fraction: held-out episodes never train
