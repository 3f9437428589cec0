"""Sharded full fine-tuning with torch FSDP2 (`torch.distributed.fsdp.fully_shard`), for models
whose weights, gradients and AdamW state do not fit one device (docs/scaling.md).

    shard(causal_lm, world)   every decoder layer its own FSDP unit, the rest (embeddings, final
                              norm, LM head: tied weights stay in one unit) the root unit; each
                              rank keeps 1/size of every parameter, its gradient and its AdamW
                              moments, and gathers a unit's weights only while it runs
    full_state(causal_lm)     the whole state dict gathered on rank 0 (a collective: every rank
                              calls it), for saving a version; {} on the other ranks
    load_full_state(...)      a saved version's whole state dict into the shards (each rank
                              reads the file and keeps its slice)
    save_optimizer / load_optimizer
                              AdamW's state, sharded as it is held: torch.distributed.checkpoint
                              writes one file per rank and a metadata file into a folder of the
                              version (a collective; resharded on load if the rank count changed)

The step stays the learner's (learner/train.py): the body and the chunked LM head are called
separately, so the body goes through `fsdp_body`, a method FSDP2 hooks like a forward (the root
unit's weights are gathered for it and stay gathered for the LM head after it). Gradients: the
loss of each rank is already divided by the token count of the whole step, so the ranks' sum is
the one-process gradient — FSDP2's reduce-scatter sums (divide factor 1, sum-only collectives:
gloo has no pre-scaled sum) and `World.all_reduce_grads` leaves sharded gradients alone.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import torch

from learner.distributed import World


def shard(causal_lm: Any, world: World) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    device = "cuda" if next(causal_lm.parameters()).device.type == "cuda" else "cpu"
    mesh = init_device_mesh(device, (world.size,))
    for layer in causal_lm.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(causal_lm, mesh=mesh)
    causal_lm.fsdp_body = types.MethodType(lambda self, **kw: self.model(**kw), causal_lm)
    register_fsdp_forward_method(causal_lm, "fsdp_body")
    for unit in [*causal_lm.model.layers, causal_lm]:  # each unit reduces its own gradients
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)


def is_sharded(t: torch.Tensor | None) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_state(causal_lm: Any) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_model_state_dict(causal_lm, options=options))  # type: ignore[arg-type]


def load_full_state(causal_lm: Any, weights: dict[str, torch.Tensor]) -> None:
    """Every rank: the whole state dict `weights` (a saved version) into this rank's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True, strict=False)  # a tied LM head is not saved
    set_model_state_dict(causal_lm, dict(weights), options=options)  # type: ignore[arg-type]


def save_optimizer(causal_lm: Any, optimizer: Any, folder: Path) -> None:
    """Every rank writes its shard of the optimizer state into `folder` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(causal_lm, optimizer)}, checkpoint_id=str(folder))


def load_optimizer(causal_lm: Any, optimizer: Any, folder: Path) -> None:
    """Every rank reads its shard of the optimizer state saved by `save_optimizer` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {"optimizer": get_optimizer_state_dict(causal_lm, optimizer)}  # the shapes to fill
    dcp.load(state, checkpoint_id=str(folder))
    set_optimizer_state_dict(causal_lm, optimizer, state["optimizer"])
