"""Versions on disk, saved atomically; resume from the last complete one.

    <root>/versions/<version>/          one complete version, never modified after the rename
        adapter/                        PEFT LoRA adapter, loadable by vLLM's /v1/load_lora_adapter
        model/                          (full fine-tuning instead) a HF folder with the tokenizer,
                                        in the serving dtype (learner/full_save.py)
        master.safetensors              (full, served in another dtype) the training-dtype weights
        optimizer.pt                    AdamW state
        optimizer/                      (sharded by FSDP2 instead) AdamW state, one file per rank
                                        (torch.distributed.checkpoint, learner/sharded.py)
        state.json                      version, parent, seq, step, data_window, lineage, baselines,
                                        trained episodes
        COMPLETE                        the marker, written last
    <root>/versions/.tmp-<version>-*/   a save in progress (or a crash's leftover): ignored, removed

A save writes everything into a temp dir beside the final one, fsyncs every file and the dir,
writes the marker, renames the dir into place and fsyncs the parent. A reader (or a restarted
learner) only ever sees versions whose dir holds the marker; a half-written one is invisible.

A model sharded by FSDP2 (`trainer.sharded`) is saved by every rank together: the whole state
dict is gathered onto rank 0, every rank writes its optimizer shard into the temp dir rank 0
made (one filesystem for all ranks), and rank 0 writes the rest and renames. Resuming loads the
version into every rank's shards.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from learner.full_save import load_full, save_full, serve_dtype
from learner.sharded import full_state, load_optimizer, save_optimizer
from learner.train import Trainer

MARKER = "COMPLETE"
SHARDED_OPTIMIZER = "optimizer"  # the folder of a sharded optimizer's state (learner/sharded.py)
TMP_PREFIX = ".tmp-"


@dataclass
class VersionState:
    version: str
    parent: str | None
    seq: int  # 1 for the first version this learner saved
    step: int  # optimizer steps taken
    data_window: dict[str, Any] = field(default_factory=dict)  # ledger positions trained on
    lineage: list[str] = field(default_factory=list)  # base version first, this one last
    advantages: dict[str, Any] = field(default_factory=dict)
    trained_episodes: list[str] = field(default_factory=list)  # learner/selection.py
    created_at: float = 0.0
    path: str = ""  # the version's dir (filled on read)

    @property
    def adapter_path(self) -> Path:
        """What the gateway loads: the adapter dir, or the full model dir."""
        adapter = Path(self.path) / "adapter"
        return adapter if adapter.is_dir() else Path(self.path) / "model"


def versions_dir(root: Path) -> Path:
    return Path(root) / "versions"


def save_version(
    root: Path, trainer: Trainer, *, version: str, parent: str | None, seq: int, data_window: dict[str, Any]
) -> VersionState:
    """Write one version atomically and return its state (with `path` set). The caller adds the
    version to `trainer.lineage` (on every rank, where only rank 0 saves). A sharded trainer's
    ranks all call it (the module doc); rank 0 alone writes the folder."""
    world, sharded = trainer.world, trainer.sharded
    weights = full_state(trainer.causal_lm) if sharded else None  # every rank: a collective
    vdir = versions_dir(root)
    final = vdir / version
    made = ""
    if world.leader:
        vdir.mkdir(parents=True, exist_ok=True)
        if (final / MARKER).is_file():
            raise FileExistsError(f"version {version} already saved at {final}")
        made = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=vdir)
    tmp = Path(world.broadcast(made) if sharded else made)
    try:
        if sharded:  # each rank its shard; rank 0 goes on once every rank has written
            save_optimizer(trainer.causal_lm, trainer.optimizer, tmp / SHARDED_OPTIMIZER)
        if not world.leader:
            return VersionState(version, parent, seq, trainer.steps, data_window, path=str(final))
        if trainer.cfg.full_finetune:
            dtype = serve_dtype(trainer.cfg.serve_dtype, trainer.model_dir)
            save_full(trainer.causal_lm, trainer.model_dir, tmp, dtype, weights)
        else:
            trainer.model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
        if not sharded:
            torch.save(trainer.optimizer.state_dict(), tmp / "optimizer.pt")
        state = VersionState(
            version=version,
            parent=parent,
            seq=seq,
            step=trainer.steps,
            data_window=data_window,
            lineage=[*trainer.lineage, version],
            advantages=trainer.advantages.state_dict(),
            trained_episodes=trainer.trained.state(),
            created_at=time.time(),
        )
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
        _fsync_tree(tmp)
        _write_synced(tmp / MARKER, b"ok\n")
        _fsync_dir(tmp)
        tmp.chmod(0o755)
        os.rename(tmp, final)
        _fsync_dir(vdir)
    finally:
        if world.leader and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    state.path = str(final)
    return state


def save_zero_adapter(root: Path, trainer: Trainer, name: str) -> Path:
    """Save the trainer's adapter while it is still all zeros (before any step or resume) as
    `<root>/base-adapters/<name>/adapter`: the base model's outputs, served as an adapter."""
    bdir = Path(root) / "base-adapters"
    bdir.mkdir(parents=True, exist_ok=True)
    final = bdir / name
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=bdir))
    try:
        trainer.model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
        _fsync_tree(tmp)
        tmp.chmod(0o755)
        os.rename(tmp, final)
        _fsync_dir(bdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "adapter"


def complete_versions(root: Path) -> list[VersionState]:
    """Every complete version, oldest first (by seq). Temp and marker-less dirs are ignored."""
    out = []
    vdir = versions_dir(root)
    if not vdir.is_dir():
        return []
    for d in vdir.iterdir():
        if d.name.startswith(TMP_PREFIX) or not (d / MARKER).is_file():
            continue
        raw = json.loads((d / "state.json").read_text())
        raw["path"] = str(d)
        out.append(VersionState(**raw))
    return sorted(out, key=lambda s: s.seq)


def latest_version(root: Path) -> VersionState | None:
    done = complete_versions(root)
    return done[-1] if done else None


def resume(root: Path, trainer: Trainer, version: str | None = None) -> VersionState | None:
    """Load the last complete version (or `version`) into `trainer` (weights, optimizer,
    baselines, lineage), remove leftovers of interrupted saves, and return it (None: nothing
    saved yet). Under torchrun rank 0 alone looks and cleans, and every rank loads the version
    it found."""
    state = None
    if trainer.world.leader:
        clean_partial(root)
        done = [s for s in complete_versions(root) if version is None or s.version == version]
        state = done[-1] if done else None
    state = trainer.world.broadcast(state)
    if state is None:
        return None
    path = Path(state.path)
    if trainer.cfg.full_finetune:
        load_full(trainer.causal_lm, path, trainer.sharded)
    else:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(trainer.model, _load_safetensors(path / "adapter"))
    if trainer.sharded:
        load_optimizer(trainer.causal_lm, trainer.optimizer, path / SHARDED_OPTIMIZER)
    else:
        opt = torch.load(path / "optimizer.pt", map_location=trainer.device, weights_only=True)
        trainer.optimizer.load_state_dict(opt)
    trainer.advantages.load_state_dict(state.advantages)
    trainer.trained.load(state.trained_episodes)
    trainer.lineage = list(state.lineage)
    trainer.steps = state.step
    return state


def clean_partial(root: Path) -> int:
    """Remove temp dirs of saves that never finished; returns how many."""
    vdir = versions_dir(root)
    n = 0
    if vdir.is_dir():
        for d in vdir.iterdir():
            if d.name.startswith(TMP_PREFIX) or (d.is_dir() and not (d / MARKER).is_file()):
                shutil.rmtree(d, ignore_errors=True)
                n += 1
    return n


def prune(root: Path, keep: int, protect: set[str] | None = None) -> list[str]:
    """Delete all but the newest `keep` complete versions (keep <= 0: delete nothing), never
    one in `protect`: what serves or may be rolled back to (`Fleet.protect`, learner/follow.py;
    the serving version is in it, as a rollback continues from it). `protect` None means that
    is not known: nothing is deleted."""
    if keep <= 0 or protect is None:
        return []
    old = [s for s in complete_versions(root)[:-keep] if s.version not in protect]
    for s in old:
        shutil.rmtree(s.path, ignore_errors=True)
    return [s.version for s in old]


def _load_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
