"""The canary decision: promote, roll back, or wait — from live reward, errors and latency.

Rewards are per-episode totals scored while the canary and the serving version ("the
parent" below: what the canary would replace) served side by side, since the canary began.
The canary is promoted when the lower
confidence bound of (canary − parent) mean reward exceeds the margin, and rolled back when
the upper bound is below zero, or its error rate or latency breaks the SLO. Both need
`min_episodes` scored episodes on each side. The interval is a normal approximation of the
difference of two means, one-sided at `confidence`; its standard error is the larger of
Welch's and the pooled one, so an arm whose few rewards happen to be all equal (a rare
success, zero variance) cannot make a noise-free-looking difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from gateway.config import VersionsConfig


@dataclass(frozen=True, slots=True)
class Arm:
    """Live figures of one version over the comparison window."""

    rewards: tuple[float, ...]
    requests: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None

    @property
    def n(self) -> int:
        return len(self.rewards)

    @property
    def mean(self) -> float:
        return sum(self.rewards) / self.n if self.rewards else float("nan")

    @property
    def var(self) -> float:
        if self.n < 2:
            return float("nan")
        m = self.mean
        return sum((r - m) ** 2 for r in self.rewards) / (self.n - 1)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def interval(self, confidence: float) -> tuple[float, float]:
        """Two-sided interval of the mean reward (for display)."""
        if self.n < 2:
            return (float("nan"), float("nan"))
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        half = z * math.sqrt(self.var / self.n)
        return (self.mean - half, self.mean + half)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # "promote" | "rollback"
    reason: str
    figures: dict[str, float | int | None]


def decide(canary: Arm, parent: Arm, cfg: VersionsConfig) -> Decision | None:
    figures: dict[str, float | int | None] = {
        "canary_n": canary.n,
        "parent_n": parent.n,
        "canary_reward": _round(canary.mean),
        "parent_reward": _round(parent.mean),
        "canary_error_rate": round(canary.error_rate, 4),
        "canary_latency_p50_ms": _round(canary.latency_p50_ms),
        "parent_latency_p50_ms": _round(parent.latency_p50_ms),
    }
    if canary.requests >= 20 and canary.error_rate > cfg.max_error_rate:
        return Decision("rollback", f"error rate {canary.error_rate:.1%} > {cfg.max_error_rate:.1%}", figures)
    if (
        canary.latency_p50_ms is not None
        and parent.latency_p50_ms
        and canary.requests >= 20
        and canary.latency_p50_ms > cfg.max_latency_ratio * parent.latency_p50_ms
    ):
        return Decision("rollback", f"p50 latency over {cfg.max_latency_ratio}x its parent's", figures)
    if canary.n < cfg.min_episodes or parent.n < cfg.min_episodes:
        return None
    diff = canary.mean - parent.mean
    welch = math.sqrt(_nz(canary.var) / canary.n + _nz(parent.var) / parent.n)
    pooled = math.sqrt(_nz(Arm(canary.rewards + parent.rewards).var) * (1 / canary.n + 1 / parent.n))
    se = max(welch, pooled)
    z = NormalDist().inv_cdf(cfg.confidence)
    low, high = diff - z * se, diff + z * se
    figures |= {"diff": _round(diff), "diff_low": _round(low), "diff_high": _round(high)}
    if low > cfg.margin:
        return Decision("promote", f"reward {diff:+.3f} over its parent (lower bound {low:+.3f})", figures)
    if high < 0:
        return Decision("rollback", f"reward {diff:+.3f} under its parent (upper bound {high:+.3f})", figures)
    return None


def _nz(v: float) -> float:
    return 0.0 if math.isnan(v) else v


def _round(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)
