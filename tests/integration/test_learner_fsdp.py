"""FSDP2 on the CPU (gloo, two processes under torchrun): one sharded learner step matches the
same step in one unsharded process — loss, every gradient, and the weights after AdamW — while
each rank holds about half of the parameters; the sharded step saved as a version is those
weights, loads with transformers, and resumes with its optimizer state (learner/sharded.py,
learner/checkpoint.py, docs/scaling.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from learner.config import LearnerConfig
from learner.train import Trainer
from tests.fixtures.fsdp_step import CONFIG, samples

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


def test_fsdp_step_matches_the_unsharded_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rlgw.stack import free_port

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        f"--master-port={free_port()}",
        str(ROOT / "tests" / "fixtures" / "fsdp_step.py"),
        str(tiny_model_dir),
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = json.loads((tmp_path / "stats.json").read_text())
    grads = load_file(str(tmp_path / "grads.safetensors"))
    weights = load_file(str(tmp_path / "weights.safetensors"))

    one = Trainer(LearnerConfig(**CONFIG), tiny_model_dir)  # type: ignore[arg-type]
    stats = one.step(samples())
    assert sharded["loss"] == pytest.approx(stats.loss, rel=1e-5, abs=1e-7)
    assert stats.loss != 0.0
    named = dict(one.causal_lm.named_parameters())
    assert {k.removeprefix("grad.") for k in grads} == {k for k, p in named.items() if p.grad is not None}
    for key, g in grads.items():
        torch.testing.assert_close(g, named[key.removeprefix("grad.")].grad, rtol=1e-4, atol=1e-6)
    state = one.causal_lm.state_dict()
    for key, w in weights.items():
        # AdamW's first step is ~lr·g/|g|: a gradient near eps moves it by up to lr; agree to 1% of lr
        torch.testing.assert_close(w, state[key], rtol=0.0, atol=1e-4)
    assert sharded["local"] <= sharded["total"] / 2 + 1024  # each rank holds about half

    folder = Path(sharded["saved"])
    assert (folder / "COMPLETE").is_file() and sorted(p.name for p in (folder / "optimizer").iterdir())
    served = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32)
    assert served.config.architectures == ["LlamaForCausalLM"]
    for key, w in served.state_dict().items():  # the unsharded step's weights (docs/tolerances.md)
        torch.testing.assert_close(w, state[key], rtol=0.0, atol=1e-4)
    assert sharded["resumed_apart"] == 0.0  # weights and AdamW moments came back exactly
