"""Looking at a canary every second: how often two equal versions get a decision anyway.

A/A runs (both arms Bernoulli(p)), each looked at after every scored episode, up to
`--episodes` per arm. Printed per method: the share of runs with a promote or roll back
(a wrong decision: the versions are equal), and for an A/B run (the canary `--lift` better)
the share decided right and the median episodes per arm it took.

    fixed       the one-sided normal interval at `confidence`, as if looked at once
    sequence    gateway/canary.py's confidence sequence (what the controller uses)

    python benchmarks/canary_peeking.py [--runs 500] [--episodes 300] [--lift 0.15]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from statistics import NormalDist

from gateway.canary import Arm, decide
from gateway.config import VersionsConfig


def fixed_first(c: list[float], p: list[float], cfg: VersionsConfig) -> tuple[str, int] | None:
    """The first look at which the fixed interval decides (Welch, one-sided z)."""
    z = NormalDist().inv_cdf(cfg.confidence)
    for n in range(cfg.min_episodes, len(c) + 1):
        a, b = c[:n], p[:n]
        ma, mb = sum(a) / n, sum(b) / n
        va, vb = statistics.variance(a), statistics.variance(b)
        se = math.sqrt(va / n + vb / n) or math.sqrt(0.5 / n)
        if ma - mb - z * se > cfg.margin:
            return "promote", n
        if ma - mb + z * se < 0:
            return "rollback", n
    return None


def sequence_first(c: list[float], p: list[float], cfg: VersionsConfig) -> tuple[str, int] | None:
    t = tuple(float(i) for i in range(len(c)))
    d = decide(Arm(tuple(c), reward_at=t), Arm(tuple(p), reward_at=t), cfg)
    if d is None or d.action == "inconclusive":
        return None
    return d.action, int(d.figures.get("decided_canary_n") or 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--lift", type=float, default=0.15)
    args = ap.parse_args()
    cfg = VersionsConfig(min_episodes=30, confidence=0.9, max_canary_episodes=args.episodes + 1)
    rng = random.Random(0)

    def arm(p: float) -> list[float]:
        return [float(rng.random() < p) for _ in range(args.episodes)]

    for name, first in (("fixed", fixed_first), ("sequence", sequence_first)):
        wrong = sum(first(arm(args.p), arm(args.p), cfg) is not None for _ in range(args.runs))
        right, took = 0, list[int]()
        for _ in range(args.runs):
            d = first(arm(args.p + args.lift), arm(args.p), cfg)
            if d is not None and d[0] == "promote":
                right, took = right + 1, [*took, d[1]]
        print(
            f"{name:9s} A/A wrong decisions {wrong / args.runs:6.1%}   "
            f"A/B (+{args.lift}) promoted {right / args.runs:6.1%}, median episodes per arm "
            f"{statistics.median(took) if took else float('nan'):.0f}"
        )


if __name__ == "__main__":
    main()
