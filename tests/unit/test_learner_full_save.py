"""Full-weight versions on disk: safetensors in the serving dtype with tokenizer and config, an
exact resume (master weights and optimizer), and pruning that spares what the gateway needs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from learner.checkpoint import complete_versions, prune, resume, save_version
from learner.config import LearnerConfig
from learner.follow import Fleet
from learner.samples import Sample
from learner.train import Trainer


def sample(tokens: list[int]) -> Sample:
    return Sample(
        tokens=tokens,
        loss_mask=[False] * 3 + [True] * (len(tokens) - 3),
        behaviour_logprobs=[-6.0] * len(tokens),
        reward=1.0,
        rubric="r",
        task="t",
        episode_id="e",
        versions=["base"],
    )


def full_trainer(model_dir: Path, **kw) -> Trainer:
    return Trainer(LearnerConfig(device="cpu", lr=1e-2, full_finetune=True, **kw), model_dir)


def test_full_version_is_served_dtype_safetensors_and_resumes_exactly(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    trainer = full_trainer(tiny_model_dir, serve_dtype="bfloat16")
    trainer.step([sample([5, 9, 14, 33, 80, 81, 200]), sample([7, 8, 9, 10, 11])])
    state = save_version(tmp_path, trainer, version="v1", parent="base", seq=1, data_window={})
    model = Path(state.adapter_path)
    assert model.name == "model"
    served = {}
    for f in model.glob("*.safetensors"):
        served.update(load_file(f))
    assert served and {t.dtype for t in served.values()} == {torch.bfloat16}
    assert json.loads((model / "config.json").read_text())["dtype"] == "bfloat16"
    assert (model / "tokenizer.json").is_file() and not list(model.glob("*.bin"))
    trained = trainer.causal_lm.state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(served[name], trained[name].to(torch.bfloat16))
    assert trained[name].dtype == torch.float32

    again = full_trainer(tiny_model_dir, serve_dtype="bfloat16")
    assert resume(tmp_path, again) is not None
    for key, value in again.causal_lm.state_dict().items():
        assert torch.equal(value, trained[key]), key  # the float32 master, not the rounded copy
    assert again.steps == 1
    moments = again.optimizer.state_dict()["state"]
    assert moments and all(
        torch.equal(moments[k]["exp_avg"], v["exp_avg"])
        for k, v in trainer.optimizer.state_dict()["state"].items()
    )


def test_auto_dtype_is_the_base_folders_and_needs_no_master(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = full_trainer(tiny_model_dir)
    state = save_version(tmp_path, trainer, version="v1", parent="base", seq=1, data_window={})
    assert json.loads((Path(state.adapter_path) / "config.json").read_text())["dtype"] == "float32"
    assert not (Path(state.path) / "master.safetensors").exists()


def test_prune_keeps_what_serves_or_may_be_rolled_back_to(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = full_trainer(tiny_model_dir)
    for i in range(1, 6):
        save_version(tmp_path, trainer, version=f"v{i}", parent=f"v{i - 1}", seq=i, data_window={})
    listing = {
        "serving": "v2",
        "canary": None,
        "versions": [
            {"id": "base", "parent": None, "status": "retired"},
            {"id": "v1", "parent": "base", "status": "retired"},
            {"id": "v2", "parent": "v1", "status": "serving"},
            {"id": "v3", "parent": "v2", "status": "rolled_back"},
        ],
    }
    protect = Fleet.from_listing(listing).protect()
    assert protect == {"v2", "v1"}  # serving and its rollback target
    assert prune(tmp_path, 2, None) == []  # the gateway could not say: nothing goes
    assert prune(tmp_path, 2, protect) == ["v3"]
    assert [s.version for s in complete_versions(tmp_path)] == ["v1", "v2", "v4", "v5"]
