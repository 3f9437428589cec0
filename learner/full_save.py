"""Full-weight versions on disk: what vLLM loads, in the serving dtype, and what resumes training.

    <version>/model/                 a HF folder vLLM serves or reloads in place (docs/full-weights.md)
        model*.safetensors           every weight, cast to the serving dtype
        config.json                  its `dtype` says the serving dtype
        tokenizer*, chat_template    copied from the base folder, so the folder stands alone
    <version>/master.safetensors     the training-dtype weights, only when they differ from the
                                     served ones (float32 training served in bfloat16): resuming
                                     from the rounded copy would lose what the optimizer holds

The serving dtype is `learner.serve_dtype`, or the base folder's own dtype when "auto". The
atomic part (temp dir, fsync, marker, rename) is learner/checkpoint.py's; this module only
fills the folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

MASTER = "master.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def folder_dtype(model_dir: Path) -> str:
    """The dtype a HF folder was saved in (float32 when its config does not say)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype) if dtype in DTYPES else "float32"


def serve_dtype(setting: str, base_dir: Path) -> torch.dtype:
    return DTYPES[folder_dtype(base_dir) if setting == "auto" else setting]


def save_full(
    causal_lm: Any,
    base_dir: Path,
    version_dir: Path,
    dtype: torch.dtype,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `<version_dir>/model` (safetensors in `dtype`, config, tokenizer) and, when the
    training dtype differs, `<version_dir>/master.safetensors`. `state`: the whole state dict
    when the model's own is sharded (gathered by learner/sharded.py)."""
    from safetensors.torch import save_file

    model_dir = version_dir / "model"
    state = causal_lm.state_dict() if state is None else state
    served = {k: v.detach().to(dtype) for k, v in state.items()}
    if getattr(causal_lm.config, "tie_word_embeddings", False):
        served.pop("lm_head.weight", None)  # tied: the embedding is the head (cast copies are not shared)
    causal_lm.save_pretrained(model_dir, state_dict=served, safe_serialization=True)
    name = next(k for k, v in DTYPES.items() if v == dtype)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = name
    config.pop("torch_dtype", None)
    config_path.write_text(json.dumps(config, indent=2))
    copy_tokenizer(base_dir, model_dir)
    trained = {k: v for k, v in state.items() if v.dtype != dtype}
    if trained:
        master = {k: v.detach().contiguous() for k, v in state.items()}
        if "lm_head.weight" not in served:
            master.pop("lm_head.weight", None)
        save_file(master, str(version_dir / MASTER))


def load_full(causal_lm: Any, version_dir: Path, sharded: bool = False) -> None:
    """Load a saved full version back into the training model: the master copy when there is
    one, else the served weights (the same dtype as training then); `sharded`: into FSDP2's
    shards (learner/sharded.py)."""
    from safetensors.torch import load_file

    master = version_dir / MASTER
    if master.is_file():
        weights = load_file(str(master))
    else:
        weights = {}
        for f in sorted((version_dir / "model").glob("*.safetensors")):
            weights.update(load_file(str(f)))
    if sharded:
        from learner.sharded import load_full_state

        load_full_state(causal_lm, weights)
        return
    missing, unexpected = causal_lm.load_state_dict(weights, strict=False)
    unexpected = [k for k in unexpected if k]
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embedding
    if missing or unexpected:
        raise ValueError(f"version {version_dir.name} does not fit the model: {missing[:3]} {unexpected[:3]}")
    if getattr(causal_lm.config, "tie_word_embeddings", False):
        causal_lm.tie_weights()


def copy_tokenizer(src: Path, dst: Path) -> None:
    for f in Path(src).iterdir():
        if f.is_file() and (
            f.name.startswith("tokenizer")
            or f.name in ("chat_template.jinja", "special_tokens_map.json", "generation_config.json")
        ):
            shutil.copy2(f, dst / f.name)
