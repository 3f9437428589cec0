"""The canary decision: promote, roll back, or wait — from live reward, errors and latency.

The controller looks at the figures every second, so a fixed-sample test would be peeked at
hundreds of times and its error rate would grow with every look. Each figure is therefore
compared through a *confidence sequence* (docs/versions.md): an interval around the estimate
that holds at every sample size at once with probability `confidence`, so looking as often as
we like costs nothing. It is the normal-mixture boundary (Robbins): for an estimate with
variance s² and a mixing variance τ², the radius is

    r = sqrt( s² (s² + τ²) / τ² · (2 ln(1/α) + ln((s² + τ²) / s²)) ),   α = 1 − confidence

with τ² chosen so the boundary is tightest when each arm has `min_episodes` (for requests: 20).

Rewards are per-episode totals scored while the canary and the serving version ("the parent":
what the canary would replace) served side by side, since the canary began. The decision is
a function of the data alone, not of when it was looked at: the observations are taken in the
order they were made (score and turn times) and the first point at which an interval leaves
its region decides — so a gateway that restarted and read the same data back reaches the
same decision. Promote when the lower bound of (canary − parent) mean reward exceeds the
margin; roll back when its upper bound is below zero, when the lower bound of the canary's
error rate exceeds `max_error_rate`, or when the lower bound of the mean log-latency ratio
exceeds ln(`max_latency_ratio`); retire as inconclusive after `max_canary_episodes` without
either. The reward variance is the larger of Welch's and the pooled one, so an arm whose few
rewards happen to be all equal (a rare success, zero variance) cannot look noise-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.config import VersionsConfig
from gateway.sequence import Running, cs_radius

MIN_REQUESTS = 20  # requests per arm before the error and latency checks


@dataclass(frozen=True, slots=True)
class Arm:
    """Live figures of one version over the comparison window, oldest first."""

    rewards: tuple[float, ...]
    requests: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    reward_at: tuple[float, ...] = ()  # when each reward was scored (default: its index)
    outcomes: tuple[tuple[float, bool, float], ...] = ()  # (at, ok, latency ms) per request

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
        """Two-sided interval of the mean reward (for display; fixed-sample)."""
        if self.n < 2:
            return (float("nan"), float("nan"))
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        half = z * math.sqrt(self.var / self.n)
        return (self.mean - half, self.mean + half)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # "promote" | "rollback" | "inconclusive"
    reason: str
    figures: dict[str, float | int | None]
    at: float = 0.0  # the time of the observation that decided


def decide(canary: Arm, parent: Arm, cfg: VersionsConfig) -> Decision | None:
    found = [
        d for d in (_rewards(canary, parent, cfg), _errors(canary, cfg), _latency(canary, parent, cfg)) if d
    ]
    if not found:
        return None
    first = min(found, key=lambda d: (d.at, d.action != "rollback"))
    return Decision(first.action, first.reason, _figures(canary, parent) | first.figures, first.at)


def _rewards(canary: Arm, parent: Arm, cfg: VersionsConfig) -> Decision | None:
    alpha = 1.0 - cfg.confidence
    c_at = canary.reward_at or tuple(float(i) for i in range(canary.n))
    p_at = parent.reward_at or tuple(float(i) for i in range(parent.n))
    merged = sorted(
        [(t, 0, r) for t, r in zip(c_at, canary.rewards, strict=True)]
        + [(t, 1, r) for t, r in zip(p_at, parent.rewards, strict=True)]
    )
    arms, both = (Running(), Running()), Running()
    low_max, high_min = -math.inf, math.inf
    for at, side, r in merged:
        arms[side].add(r)
        both.add(r)
        c, p = arms
        if c.n >= cfg.max_canary_episodes and side == 0:
            return Decision("inconclusive", f"no decision after {c.n} episodes", {"canary_n": c.n}, at)
        if c.n < cfg.min_episodes or p.n < cfg.min_episodes:
            continue
        diff = c.mean - p.mean
        s2 = max(c.var / c.n + p.var / p.n, both.var * (1 / c.n + 1 / p.n))
        tau2 = 6.0 * both.var * 2 / cfg.min_episodes
        r_ = cs_radius(s2, tau2, alpha)
        low_max, high_min = max(low_max, diff - r_), min(high_min, diff + r_)  # running intersection
        figures = {"diff": _round(diff), "diff_low": _round(low_max), "diff_high": _round(high_min)}
        figures |= {"decided_canary_n": c.n, "decided_parent_n": p.n}
        if low_max > cfg.margin:
            return Decision(
                "promote", f"reward {diff:+.3f} over its parent (lower bound {low_max:+.3f})", figures, at
            )
        if high_min < 0:
            return Decision(
                "rollback", f"reward {diff:+.3f} under its parent (upper bound {high_min:+.3f})", figures, at
            )
    return None


def _errors(canary: Arm, cfg: VersionsConfig) -> Decision | None:
    alpha, cap = 1.0 - cfg.confidence, cfg.max_error_rate
    seq = canary.outcomes or ((0.0, False, 0.0),) * canary.errors + ((0.0, True, 0.0),) * (
        canary.requests - canary.errors
    )
    looks = range(len(seq)) if canary.outcomes else [len(seq) - 1]  # counts only: one look at the end
    n = errors = 0
    for i, (at, ok, _) in enumerate(seq):
        n, errors = n + 1, errors + (not ok)
        if i not in looks or n < MIN_REQUESTS:
            continue
        rate = errors / n
        s2 = max(rate * (1 - rate), cap * (1 - cap)) / n
        low = rate - cs_radius(s2, 6.0 * cap * (1 - cap) / MIN_REQUESTS, alpha)
        if low > cap:
            figures = {
                "canary_error_rate": round(rate, 4),
                "error_rate_low": _round(low),
                "decided_requests": n,
            }
            return Decision(
                "rollback", f"error rate {rate:.1%} > {cap:.1%} (lower bound {low:.1%})", figures, at
            )
    return None


def _latency(canary: Arm, parent: Arm, cfg: VersionsConfig) -> Decision | None:
    alpha, limit = 1.0 - cfg.confidence, math.log(cfg.max_latency_ratio)
    timed = [(at, 0, math.log(max(ms, 1e-3))) for at, ok, ms in canary.outcomes if ok]
    timed += [(at, 1, math.log(max(ms, 1e-3))) for at, ok, ms in parent.outcomes if ok]
    arms, both = (Running(), Running()), Running()
    low_max = -math.inf
    for at, side, x in sorted(timed):
        arms[side].add(x)
        both.add(x)
        c, p = arms
        if c.n < MIN_REQUESTS or p.n < MIN_REQUESTS:
            continue
        diff = c.mean - p.mean
        s2 = max(c.var / c.n + p.var / p.n, 1e-12)
        low_max = max(low_max, diff - cs_radius(s2, 6.0 * max(both.var, 1e-6) * 2 / MIN_REQUESTS, alpha))
        if low_max > limit:
            ratio = math.exp(diff)
            figures: dict[str, float | int | None] = {
                "latency_ratio": round(ratio, 3),
                "latency_ratio_low": round(math.exp(low_max), 3),
            }
            return Decision(
                "rollback", f"latency {ratio:.2f}x its parent's (over {cfg.max_latency_ratio}x)", figures, at
            )
    return None


def _figures(canary: Arm, parent: Arm) -> dict[str, float | int | None]:
    return {
        "canary_n": canary.n,
        "parent_n": parent.n,
        "canary_reward": _round(canary.mean),
        "parent_reward": _round(parent.mean),
        "canary_error_rate": round(canary.error_rate, 4),
        "canary_latency_p50_ms": _round(canary.latency_p50_ms),
        "parent_latency_p50_ms": _round(parent.latency_p50_ms),
    }


def _round(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else round(x, 4)
