"""The paired comparison of an evaluation: a version and its parent on the same prompts.

Both answer every prompt, so each prompt gives one difference d = version − parent, and the
prompt's own difficulty cancels out of it. The interval is Student's t on those differences
(docs/versions.md, "The evaluation"):

    d̄ ± t(1 − α/2, n − 1) · s_d / √n,   α = 1 − confidence

The t quantile is exact for 1 and 2 degrees of freedom and the Cornish–Fisher expansion in
the normal quantile above that (Abramowitz & Stegun 26.7.5; within 1e-3 of the table from 3
degrees of freedom up), so no statistics package is needed.

A figure is **worse** when the whole interval lies below −margin: the evaluation is confident
the version lost more than `margin`. A version the evaluation cannot tell from its parent is
not stopped: its canary decides on live reward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (0.5 < p < 1)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class Paired:
    """Means of both sides and the interval of their difference (None below two pairs)."""

    n: int
    parent: float
    version: float
    diff: float
    low: float | None
    high: float | None

    def worse(self, margin: float) -> bool:
        """The version is confidently below its parent by more than `margin`."""
        return self.high is not None and self.high < -margin


def paired(parent: Sequence[float], version: Sequence[float], confidence: float) -> Paired:
    """Compare `version[i]` with `parent[i]`, each pair one prompt."""
    if len(parent) != len(version) or not parent:
        raise ValueError(f"needs pairs: {len(parent)} parent values, {len(version)} version values")
    n = len(parent)
    diffs = [v - p for p, v in zip(parent, version, strict=True)]
    mean = sum(diffs) / n
    low = high = None
    if n >= 2:
        var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
        half = t_quantile((1 + confidence) / 2, n - 1) * math.sqrt(var / n)
        low, high = mean - half, mean + half
    return Paired(n, sum(parent) / n, sum(version) / n, mean, low, high)
