"""Prometheus metrics of the learner, on a registry the caller owns (None: not exported)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

GAUGES = (  # the last step's figures (learner/stats.py); kl_base / entropy_base: when measured
    "loss",
    "reward_mean",
    "entropy",
    "entropy_base",
    "kl_base",
    "ratio_mean",
    "ratio_min",
    "ratio_max",
    "clipped_frac",
    "tokens_per_s",
)


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.enabled = registry is not None
        if registry is None:
            return
        self.steps = Counter("rlgw_learner_steps", "Optimizer steps taken", registry=registry)
        self.tokens = Counter("rlgw_learner_tokens", "Loss tokens trained on", registry=registry)
        self.samples = Counter("rlgw_learner_samples", "Samples trained on", registry=registry)
        self.skipped = Counter(
            "rlgw_learner_skipped", "Samples or turns skipped, by reason", ["reason"], registry=registry
        )
        self.versions = Counter("rlgw_learner_versions", "Versions saved and published", registry=registry)
        self.held_back = Counter(
            "rlgw_learner_held_back",
            "Versions past a KL or entropy guard, never published",
            registry=registry,
        )
        self.gauges = {
            name: Gauge(f"rlgw_learner_{name}", f"Last step's {name}", registry=registry) for name in GAUGES
        }

    def observe_step(self, stats: Any) -> None:
        if not self.enabled:
            return
        self.steps.inc()
        self.tokens.inc(stats.tokens)
        self.samples.inc(stats.samples)
        for reason, n in stats.skipped.items():
            self.skipped.labels(reason).inc(n)
        for name, gauge in self.gauges.items():
            value = getattr(stats, name)
            if value is not None:
                gauge.set(value)

    def observe_skips(self, counts: dict[str, int]) -> None:
        if not self.enabled:
            return
        for reason, n in counts.items():
            self.skipped.labels(reason).inc(n)

    def observe_held_back(self) -> None:
        if self.enabled:
            self.held_back.inc()

    def observe_version(self) -> None:
        if self.enabled:
            self.versions.inc()
