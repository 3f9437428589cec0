"""The learner follows the fleet: after a rollback it trains on top of what serves.

Before each version, the learner asks the gateway which version serves and which were rolled
back (`GET /admin/versions`, through the publisher). Its own parent is *off the fleet* when the
chain from it up to the serving version holds a rolled-back version (the parent itself, or an
ancestor: a canary rolled back, or a serving version rolled back to its parent). Then it
continues from the serving version:

    weights, optimizer state, baselines   the serving version's checkpoint, when this learner
                                          saved it (`prune` keeps it); else the adapter the
                                          gateway serves, with a fresh optimizer; the base: a
                                          zero adapter, fresh optimizer
    pending versions                      dropped: each descends from the rolled-back line, so
                                          none is ever published
    data position and lineage             kept: episodes served by a rolled-back version stay
                                          usable under the staleness rule (their age counts the
                                          versions made since, rolled back or not)

A gateway that cannot be asked leaves everything as it is (asked again before the next version).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.published import BASE_VERSION, PublishedVersion

log = logging.getLogger(__name__)
OFF_THE_FLEET = ("rolled_back", "eval_failed")  # eval_failed: stopped by the eval gate (docs/versions.md)


@dataclass(frozen=True)
class Fleet:
    """What the gateway serves: from its version listing."""

    serving: str
    rolled_back: frozenset[str] = frozenset()
    parents: dict[str, str | None] = field(default_factory=dict)
    adapter_paths: dict[str, str | None] = field(default_factory=dict)
    held: frozenset[str] = frozenset()  # the canary, queued (registered, loaded) and pinned versions

    @classmethod
    def from_listing(cls, listing: dict[str, Any]) -> Fleet:
        versions = listing.get("versions") or []
        return cls(
            serving=str(listing["serving"]),
            rolled_back=frozenset(v["id"] for v in versions if v.get("status") in OFF_THE_FLEET),
            parents={v["id"]: v.get("parent") for v in versions},
            adapter_paths={v["id"]: v.get("adapter_path") for v in versions},
            held=frozenset(_held(listing, versions)),
        )

    def protect(self, pending: Sequence[PublishedVersion] = ()) -> set[str]:
        """The versions that must stay on disk (`keep_versions`): the serving version, the held
        ones and what is not published yet, and each one's parent (a rollback target)."""
        parents = dict(self.parents) | {p.version: p.parent for p in pending}
        keep: set[str | None] = {self.serving, *self.held, *(p.version for p in pending)}
        keep |= {parents.get(v) for v in keep if v}
        return {v for v in keep if v}


def _held(listing: dict[str, Any], versions: list[dict[str, Any]]) -> list[str]:
    """The canary, and the queued (registered, loaded) and pinned versions of a listing."""
    queued = ("registered", "loaded", "evaluating")
    held = [v["id"] for v in versions if v.get("pinned") or v.get("status") in queued]
    return held + ([str(listing["canary"])] if listing.get("canary") else [])


def ask_fleet(publisher: Any) -> Fleet | None:
    ask = getattr(publisher, "fleet", None)
    if ask is None:
        return None
    try:
        fleet = ask()
    except Exception as exc:  # the boundary: a gateway away now is asked again next time
        log.warning("learner could not ask the gateway what serves: %s", exc)
        return None
    return fleet if isinstance(fleet, Fleet) else None


def off_the_fleet(parent: str, fleet: Fleet, pending: list[PublishedVersion]) -> bool:
    """Whether the chain from `parent` up to the serving version holds a rolled-back version."""
    parents = dict(fleet.parents) | {p.version: p.parent for p in pending if not p.base_equivalent}
    seen: set[str] = set()
    v: str | None = parent
    while v is not None and v != fleet.serving and v not in seen:
        if v in fleet.rolled_back:
            return True
        seen.add(v)
        v = parents.get(v)
    return False


def continue_from_serving(root: Path, trainer: Any, fleet: Fleet) -> str:
    """Load what serves into `trainer` (see the module doc); returns how it was loaded."""
    import torch

    from learner.checkpoint import complete_versions, resume

    target = fleet.serving
    if any(s.version == target for s in complete_versions(root)):
        lineage, steps = list(trainer.lineage), trainer.steps
        resume(root, trainer, version=target)
        trainer.lineage, trainer.steps = lineage, steps  # staleness counts every version made
        return "checkpoint"
    trainer.optimizer.state.clear()
    path = fleet.adapter_paths.get(target)
    if target != BASE_VERSION and path and not trainer.cfg.full_finetune:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights: dict[str, Any] = {}
        for f in sorted(Path(path).glob("*.safetensors")):
            weights.update(load_file(f))
        set_peft_model_state_dict(trainer.model, weights)
        return "served adapter"
    if trainer.cfg.full_finetune:
        raise RuntimeError(f"cannot continue from {target}: no checkpoint of it here (full fine-tuning)")
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.zero_()  # a zero adapter: the base model's outputs
    return "zero adapter"
