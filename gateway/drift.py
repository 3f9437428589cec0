"""Drift and reward-hacking alarms: a canary's side metrics against its parent's, on the same
traffic (the episodes each served since the canary began).

A reward can rise while usefulness falls: a model that learns to emit broken tool calls where
it expects to fail, or to ask a question back instead of doing the task (docs/versions.md).
So besides the reward, every metric below is compared between the canary and the version
serving beside it. The controller looks every second, so each difference is judged by a
confidence sequence (gateway/sequence.py), valid at every look at once: an alarm when it
excludes 0, with the false-alarm rate of a single two-sided test at `alarm_sigmas` standard
errors however often it is looked at (docs/versions.md), once each side has
`alarm_min_samples`. An alarm is: a version event `alarm` (the dashboard and
GET /admin/versions/events show it), the Prometheus gauge `rlgw_version_alarm{version,metric}`,
and, for the metrics named in `block_promotion_on`, no automatic promotion of that canary.
Alarms are two-sided (drift either way); a version that learns drifts on purpose, so none
blocks by default.

    rubric:<rubric>/<name>   every zero-weight metric a rubric scores (the scores topic)
    answer_tokens            completion tokens of a turn
    tool_call_error          1 when a turn's tool call has arguments that are not JSON
    question_back            1 when a turn answers with a question and calls no tool
    refusal                  1 when a turn opens with a refusal
    surprisal                mean −log-prob of the sampled tokens (an entropy estimate)
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.sequence import first_shift, two_sided_alpha

REFUSALS = ("i can't", "i cannot", "i'm sorry", "i am sorry", "i'm unable", "i am unable", "i won't")
KEPT = 20_000  # per version and metric: the newest values


def behaviour(turn: dict[str, Any]) -> dict[str, float]:
    """The built-in behaviour metrics of one recorded turn (plain data, as on the turns topic)."""
    choices = turn.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return {}
    first = choices[0]
    msg = first.get("message") or {}
    raw = msg.get("content")
    content: str = raw if isinstance(raw, str) else ""
    calls = msg.get("tool_calls") or []
    usage = turn.get("usage") or {}
    tokens = first.get("token_ids")
    out: dict[str, float] = {
        "answer_tokens": float(
            len(tokens) if tokens else usage.get("completion_tokens") or len(content.split())
        ),
        "tool_call_error": float(any(not _json_args(c) for c in calls)),
        "question_back": float(not calls and content.rstrip().endswith("?")),
        "refusal": float(content.lstrip().lower().startswith(REFUSALS)),
    }
    logprobs = first.get("logprobs")
    if logprobs:
        out["surprisal"] = -sum(logprobs) / len(logprobs)
    return out


def _json_args(call: Any) -> bool:
    try:
        args = call["function"]["arguments"]
        if isinstance(args, str):
            orjson.loads(args)
        return True
    except (KeyError, TypeError, orjson.JSONDecodeError):
        return False


def zero_weight(values: dict[str, float | None], weights: dict[str, float], rubric: str) -> dict[str, float]:
    """A score's zero-weight metrics, named for their rubric."""
    return {
        f"rubric:{rubric}/{k}": float(v)
        for k, v in values.items()
        if v is not None and weights.get(k, 1.0) == 0
    }


class SideMetrics:
    """Per version and metric: values by key (turn or episode), each with the time it was made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by: dict[str, dict[str, OrderedDict[str, tuple[float, float]]]] = defaultdict(
            lambda: defaultdict(OrderedDict)
        )

    def add(self, version: str, key: str, values: dict[str, float], at: float) -> None:
        with self._lock:
            for name, x in values.items():
                kept = self._by[version][name]
                kept[key] = (at, x)
                if len(kept) > KEPT:
                    kept.popitem(last=False)

    def since(self, version: str, at: float) -> dict[str, list[tuple[float, float]]]:
        """(made at, value) of each metric of `version` made from `at` on."""
        with self._lock:
            return {
                m: [(t, x) for t, x in kept.values() if t >= at]
                for m, kept in self._by.get(version, {}).items()
            }


@dataclass(frozen=True, slots=True)
class Shift:
    metric: str
    canary_mean: float
    parent_mean: float
    sigmas: float
    n: int
    parent_n: int
    decided_n: int = 0  # the canary's values when the sequence left 0 (the parent's: below)
    decided_parent_n: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "canary_mean": round(self.canary_mean, 4),
            "parent_mean": round(self.parent_mean, 4),
            "sigmas": round(self.sigmas, 2),
            "canary_n": self.n,
            "parent_n": self.parent_n,
            "decided_canary_n": self.decided_n,
            "decided_parent_n": self.decided_parent_n,
        }


def shifts(
    canary: dict[str, list[tuple[float, float]]],
    parent: dict[str, list[tuple[float, float]]],
    sigmas: float,
    min_n: int,
) -> list[Shift]:
    """The metrics whose canary mean has left the parent's: the difference's confidence sequence
    (gateway/sequence.py) excludes 0 at some observation, taken in the order they were made, with
    the error of one two-sided test at `sigmas` standard errors over all looks together."""
    alpha = two_sided_alpha(sigmas)
    out = []
    for name in sorted(canary.keys() & parent.keys()):
        c, p = canary[name], parent[name]
        if len(c) < min_n or len(p) < min_n:
            continue
        merged = sorted([(t, 0, x) for t, x in c] + [(t, 1, x) for t, x in p])
        found = first_shift(merged, min_n, alpha)
        if found is not None:
            mc, mp = sum(x for _, x in c) / len(c), sum(x for _, x in p) / len(p)
            out.append(Shift(name, mc, mp, found[3], len(c), len(p), found[0], found[1]))
    return out


class AlarmGauge(Collector):
    """`rlgw_version_alarm{version,metric}` = 1 for every alarm the registry holds, and the
    judges' `rlgw_judge_alarm{judge}` (gateway/judge_alarms.py)."""

    def __init__(self, versions: Any) -> None:
        self.versions = versions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "rlgw_version_alarm",
            "Drift or reward-hacking alarm of a version (1: raised)",
            labels=["version", "metric"],
        )
        for v in list(self.versions.versions.values()):
            for metric in list(v.alarms):
                g.add_metric([v.id, metric], 1.0)
        yield g
        yield from self.versions.judges.collect()
