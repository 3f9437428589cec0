"""Two ranks (gloo, CPU) training one model take the same steps as one process on the whole batch.

The ranks are real processes (torch.multiprocessing, spawn) joined by `join_world` from the
environment torchrun would set; each seeds its RNG differently, so only the broadcast of rank
0's LoRA init makes them start alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from learner.config import LearnerConfig
from learner.distributed import World, join_world
from learner.samples import Sample
from learner.train import Trainer
from rlgw.stack import free_port

pytestmark = pytest.mark.slow

TARGETS = [*LearnerConfig().lora_targets, "lm_head"]
# One process vs two ranks: the same float32 sums in another order. Gradients agree to 1e-5 of
# their largest element. Weights after AdamW (lr 1e-2) agree to 1e-4 (1% of a step): AdamW scales
# each element's step by 1 / |its gradient|, so an element whose gradient is near zero turns the
# float noise into a visible step (measured: 2 of ~20k elements differ by more than 1e-6, the
# worst by 7.6e-6).
GRAD_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-4


def config() -> LearnerConfig:
    return LearnerConfig(device="cpu", lr=1e-2, lora_targets=TARGETS, micro_batch_tokens=32)


def batches() -> list[list[Sample]]:
    """Three steps: uneven samples (some packed together, one alone), then one sample only, so
    that one rank has nothing to train on and must still take part."""
    g = torch.Generator().manual_seed(7)
    steps = []
    for sizes in ((9, 14, 5, 20, 7, 11), (6, 30, 8, 12, 16), (10,)):
        step = []
        for i, n in enumerate(sizes):
            tokens = torch.randint(3, 700, (n,), generator=g).tolist()
            behaviour = (-4.0 - 4.0 * torch.rand(n, generator=g)).tolist()
            step.append(
                Sample(
                    tokens=tokens,
                    loss_mask=[False] * 3 + [True] * (n - 3),
                    behaviour_logprobs=[0.0] * 3 + behaviour[3:],
                    reward=float(i % 3),
                    rubric="r",
                    task=f"t{i % 2}",
                    episode_id=f"e{i}",
                    versions=["base"],
                )
            )
        steps.append(step)
    return steps


def trainable(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def train(trainer: Trainer) -> tuple[list[Any], list[dict[str, torch.Tensor]]]:
    """Each step's figures and (clipped) gradients."""
    steps, grads = [], []
    for samples in batches():
        steps.append(trainer.step(samples))
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
    return steps, grads


def rank_main(rank: int, port: int, model_dir: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.manual_seed(rank)  # different inits: rank 0's must reach rank 1
    world = join_world("cpu")
    try:
        trainer = Trainer(config().model_copy(update={"cpu_threads": 1}), model_dir, world=world)
        steps, grads = train(trainer)
        torch.save(
            {"weights": trainable(trainer), "steps": steps, "grads": grads}, Path(out) / f"rank{rank}.pt"
        )
    finally:
        world.close()


def test_two_ranks_take_the_steps_of_one_process_on_the_whole_batch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    mp.spawn(rank_main, args=(free_port(), str(tiny_model_dir), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    torch.manual_seed(0)  # rank 0's seed: the same LoRA init
    alone = Trainer(config(), tiny_model_dir)
    start = trainable(alone)
    steps, grads = train(alone)
    expected = trainable(alone)

    for step, (one, two) in enumerate(zip(grads, ranks[0]["grads"], strict=True), 1):
        assert two.keys() == one.keys()
        scale = max(g.abs().max().item() for g in one.values())
        worst = max((two[n] - one[n]).abs().max().item() for n in one)
        print(f"\n[2 ranks vs 1 process] step {step}: gradients differ by {worst / scale:.1e} of the largest")
        assert worst <= GRAD_TOLERANCE * scale

    assert ranks[0]["weights"].keys() == expected.keys()
    worst = 0.0
    for name, want in expected.items():
        a, b = ranks[0]["weights"][name], ranks[1]["weights"][name]
        assert torch.equal(a, b), name  # the same all-reduced gradients, the same AdamW step
        worst = max(worst, (a - want).abs().max().item())
    moved = max((expected[n] - start[n]).abs().max().item() for n in expected)
    print(f"\n[2 ranks vs 1 process] max |weight difference| {worst:.2e}; max weight change {moved:.2e}")
    assert worst <= WEIGHT_TOLERANCE
    assert moved > 100 * WEIGHT_TOLERANCE  # the steps did move the weights

    for alone_step, rank_step in zip(steps, ranks[0]["steps"], strict=True):
        assert (rank_step.samples, rank_step.tokens) == (alone_step.samples, alone_step.tokens)
        for figure in ("loss", "entropy", "ratio_mean", "ratio_max", "clipped_frac", "grad_norm"):
            expect = pytest.approx(getattr(alone_step, figure), rel=1e-4, abs=1e-6)
            assert getattr(rank_step, figure) == expect, figure
    assert steps[-1].samples == 1  # the step where rank 1 had no sample


def test_shards_are_balanced_disjoint_and_cover_the_batch() -> None:
    items = [5, 40, 7, 22, 9, 1, 13]
    shards = [World(rank=r, size=3).shard(items, lambda x: x) for r in range(3)]
    assert sorted(x for s in shards for x in s) == sorted(items)
    assert [sum(s) for s in shards] == [40, 29, 28]  # largest first, each to the least loaded rank
    assert all(s == sorted(s, key=items.index) for s in shards)  # the batch's order within a shard
    assert World().shard(items, lambda x: x) == items
