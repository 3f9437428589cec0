"""The learner's figures, as they travel with the version they made.

A published version's `data_window[TRAINING_KEY]` is a dict: the version's own figures (the
learner's per-version summary: sums of samples, tokens and seconds; extremes of the ratio;
loss-token-weighted means of the rest; `tokens_per_s`; `skipped` by reason) and, under
`PER_STEP`, one dict per optimizer step of that version. It rides the same publish call,
ModelVersion events and versions topic as the version, so any gateway (its dashboard) and
`rlgw up`'s live view read the learner's health without a channel of their own.
docs/terminal.md lists the fields.

Each step's figures are the learner's StepStats fields that are numbers (per loss token where
they are means), `skipped` and `tokens_per_s`. Readers take either name of a figure the learner
has renamed (`kl_base` or `kl`, `clipped_frac` or `clipped_fraction`); a figure the learner adds
later travels and is summarised like the others, with no change here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

TRAINING_KEY = "training"
PER_STEP = "per_step"
# Summed over a version's steps; every other number is a loss-token-weighted mean, except the
# extremes (MAXED, MINNED).
SUMMED = ("samples", "tokens", "seconds")
MAXED = ("ratio_max", "grad_norm")
MINNED = ("ratio_min",)
NOT_FIGURES = ("step", "steps")


def _number(x: Any) -> float | int | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x if isinstance(x, int) else round(x, 6)


def step_figures(stats: Any) -> dict[str, Any]:
    """One step's figures from a StepStats-like dataclass (every numeric field, and `skipped`)."""
    # not dataclasses.asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs
    names = [f.name for f in dataclasses.fields(stats)] if dataclasses.is_dataclass(stats) else vars(stats)
    raw = {name: getattr(stats, name) for name in names}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "skipped":
            out["skipped"] = {str(k): int(v) for k, v in dict(value).items() if v}
        elif (n := _number(value)) is not None:
            out[name] = n
    seconds, tokens = out.get("seconds") or 0.0, out.get("tokens") or 0
    out["tokens_per_s"] = round(tokens / seconds, 2) if seconds > 0 else None
    out.setdefault("skipped", {})
    return out


def training_window(steps: Sequence[Any], summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The value of `data_window[TRAINING_KEY]` for a version made by these steps (StepStats);
    `summary`: the learner's own per-version figures, else `version_summary` of the steps."""
    per_step = [step_figures(s) for s in steps]
    return {**(summary if summary is not None else version_summary(per_step)), PER_STEP: per_step}


def _training(data_window: Mapping[str, Any] | None) -> Mapping[str, Any]:
    training = (data_window or {}).get(TRAINING_KEY)
    return training if isinstance(training, Mapping) else {}


def training_steps(data_window: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The step figures a version carries (none for the base, or a version from elsewhere)."""
    steps = _training(data_window).get(PER_STEP)
    return [s for s in steps if isinstance(s, Mapping)] if isinstance(steps, list) else []


def training_summary(data_window: Mapping[str, Any] | None) -> dict[str, Any]:
    """A version's figures: the learner's summary when it sent one, else one made from its steps."""
    summary = {k: v for k, v in _training(data_window).items() if k != PER_STEP}
    return summary or (version_summary(steps) if (steps := training_steps(data_window)) else {})


def version_summary(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A version's figures over its steps: sums (samples, tokens, seconds), extremes (ratio_max,
    grad_norm, ratio_min), loss-token-weighted means of the rest, tokens/s overall, skips added up."""
    out: dict[str, Any] = {"steps": len(steps)}
    skipped: dict[str, int] = {}
    weighted: dict[str, tuple[float, float]] = {}  # name -> (sum of value * tokens, sum of tokens)
    for s in steps:
        w = float(s.get("tokens") or 0)
        for reason, n in dict(s.get("skipped") or {}).items():
            skipped[reason] = skipped.get(reason, 0) + int(n)
        for name, value in s.items():
            if name in NOT_FIGURES or name == "tokens_per_s" or _number(value) is None:
                continue
            if name in SUMMED:
                out[name] = out.get(name, 0) + value
            elif name in MAXED:
                out[name] = max(out.get(name, value), value)
            elif name in MINNED:
                out[name] = min(out.get(name, value), value)
            elif w > 0:  # a step that trained on nothing has no mean to add
                total, weight = weighted.get(name, (0.0, 0.0))
                weighted[name] = (total + value * w, weight + w)
    for name, (total, weight) in weighted.items():
        out[name] = round(total / weight, 6)
    seconds = out.get("seconds") or 0
    out["tokens_per_s"] = round(out.get("tokens", 0) / seconds, 2) if seconds > 0 else None
    out["skipped"] = skipped
    return out
