"""What a training step and a version report, and the guard that holds a version back.

Per step (`StepStats`, in the learner log line and as `rlgw_learner_<name>` gauges) and per
version (`version_figures`, on the version's data window as `training`, and in its state.json):

    entropy        mean entropy of the policy's own distribution (T = 1) at the loss tokens, nats
    entropy_base   the same for the base model on the same tokens (when the base is measured)
    kl_base        mean KL to the base model per loss token (k3 estimator, learner/objective.py)
    ratio_mean     mean importance ratio learner / behaviour (processed distributions)
    ratio_min      smallest and largest ratio of a loss token
    ratio_max
    clipped_frac   share of loss tokens whose ratio was truncated at `clip`
    tokens_per_s   loss tokens trained per second of step wall clock
    skipped        {reason: count} of what was not trained on

The guard (`held_back`): a version whose mean KL to the base exceeds `max_kl_base`, or whose
mean entropy exceeds the base model's on the same tokens by more than `max_entropy_rise`, is
not published. Entropy rising while the reward climbs is the collapse seen on the first
real-model run (2.1 -> 3.8 nats over 18 steps, answers turning to noise that a length rubric
still rewarded); KL to the base bounds how far any version strays. Comparing entropy with the
base on the same tokens makes the limit independent of the task's own entropy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepStats:
    step: int
    samples: int = 0
    tokens: int = 0  # loss tokens
    loss: float = 0.0
    reward_mean: float = 0.0
    entropy: float = 0.0
    entropy_base: float | None = None  # None: the base model was not measured this step
    kl_base: float | None = None
    ratio_mean: float = 0.0
    ratio_min: float = 0.0
    ratio_max: float = 0.0
    clipped_frac: float = 0.0
    grad_norm: float = 0.0
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        skipped = ",".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "0"
        kl = "-" if self.kl_base is None else f"{self.kl_base:.4f}"
        base = "-" if self.entropy_base is None else f"{self.entropy_base:.3f}"
        return (
            f"step={self.step} samples={self.samples} tokens={self.tokens} loss={self.loss:.4f} "
            f"reward={self.reward_mean:.3f} entropy={self.entropy:.3f} entropy_base={base} "
            f"kl_base={kl} ratio_mean={self.ratio_mean:.3f} ratio_min={self.ratio_min:.3f} "
            f"ratio_max={self.ratio_max:.3f} clipped_frac={self.clipped_frac:.3f} "
            f"grad_norm={self.grad_norm:.3f} tokens_per_s={self.tokens_per_s:.1f} "
            f"skipped={skipped} s={self.seconds:.2f}"
        )


def version_figures(steps: Sequence[StepStats]) -> dict[str, Any]:
    """One version's figures from its steps: token-weighted means, extremes, sums."""
    trained = [s for s in steps if s.tokens]
    tokens = sum(s.tokens for s in trained)
    seconds = sum(s.seconds for s in steps)
    skipped: Counter[str] = Counter()
    for s in steps:
        skipped.update(s.skipped)

    def mean(name: str) -> float | None:
        values = [(getattr(s, name), s.tokens) for s in trained if getattr(s, name) is not None]
        n = sum(t for _, t in values)
        return round(sum(v * t for v, t in values) / n, 6) if n else None

    return {
        "steps": len(steps),
        "tokens": tokens,
        "reward_mean": mean("reward_mean"),
        "entropy": mean("entropy"),
        "entropy_base": mean("entropy_base"),
        "kl_base": mean("kl_base"),
        "ratio_mean": mean("ratio_mean"),
        "ratio_min": min((s.ratio_min for s in trained), default=None),
        "ratio_max": max((s.ratio_max for s in trained), default=None),
        "clipped_frac": mean("clipped_frac"),
        "tokens_per_s": round(tokens / seconds, 2) if seconds else None,
        "skipped": dict(skipped),
    }


def held_back(figures: dict[str, Any], *, max_kl_base: float, max_entropy_rise: float) -> str | None:
    """Why a version with these figures must not be published (module docstring); None: it may."""
    kl, entropy, base = figures.get("kl_base"), figures.get("entropy"), figures.get("entropy_base")
    if max_kl_base > 0 and kl is not None and kl > max_kl_base:
        return f"kl_base {kl:.3f} > max_kl_base {max_kl_base}"
    if (
        max_entropy_rise > 0
        and entropy is not None
        and base is not None
        and entropy - base > max_entropy_rise
    ):
        return f"entropy {entropy:.3f} exceeds the base's {base:.3f} by more than {max_entropy_rise}"
    return None
