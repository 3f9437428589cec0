"""Prometheus metrics of a rubric worker, per rubric and function, on a registry you pass."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

VALUE_BUCKETS = (-1.0, -0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 5.0, 10.0)


class WorkerMetrics:
    """Implements the rubric Observer; children are cached so an observation is cheap."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["rubric", "function"]
        self.seconds = Histogram(
            "rlgw_reward_function_seconds", "Time per reward function call.", labels, registry=registry
        )
        self.errors = Counter(
            "rlgw_reward_function_errors",
            "Reward function calls that raised or timed out.",
            labels,
            registry=registry,
        )
        self.values = Histogram(
            "rlgw_reward_function_value", "Values returned by reward functions.", labels,
            buckets=VALUE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.scores = Counter(
            "rlgw_rubric_scores", "Scores published, by rubric.", ["rubric"], registry=registry
        )
        self.rescores = Counter(
            "rlgw_rubric_rescores", "Scores that supersede an earlier one (late feedback).", ["rubric"],
            registry=registry,
        )  # fmt: skip
        self.open_episodes = Gauge(
            "rlgw_rubric_open_episodes", "Episodes a worker holds in memory.", registry=registry
        )
        self.bad_records = Counter(
            "rlgw_rubric_bad_records", "Records the worker could not parse (skipped).", registry=registry
        )
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def observe(self, rubric: str, function: str, seconds: float, value: float | None, error: bool) -> None:
        key = (rubric, function)
        children = self._children.get(key)
        if children is None:
            children = (
                self.seconds.labels(rubric, function),
                self.errors.labels(rubric, function),
                self.values.labels(rubric, function),
            )
            self._children[key] = children
        children[0].observe(seconds)
        if error:
            children[1].inc()
        elif value is not None:
            children[2].observe(value)
