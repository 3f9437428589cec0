"""Sequential statistics for the canary and the drift alarms: a running mean and variance, the
radius of a normal-mixture confidence sequence (gateway/canary.py says how it is used;
docs/versions.md why a fixed-sample interval cannot be looked at every second), and the first
point at which two samples' means part (gateway/drift.py)."""

from __future__ import annotations

import math


class Running:
    """Mean and sample variance of a growing sample (Welford's update)."""

    __slots__ = ("_m2", "mean", "n")

    def __init__(self) -> None:
        self.n, self.mean, self._m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (x - self.mean)

    @property
    def var(self) -> float:
        return self._m2 / (self.n - 1) if self.n > 1 else 0.0


def cs_radius(s2: float, tau2: float, alpha: float) -> float:
    """Half-width of the normal-mixture confidence sequence for an estimate whose variance is
    `s2`, mixing variance `tau2`, error `alpha` over all looks: the set of differences the
    mixture likelihood ratio has not yet rejected at 1/alpha."""
    if s2 <= 0.0:
        return 0.0
    tau2 = max(tau2, 1e-12)
    return math.sqrt(s2 * (s2 + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + math.log((s2 + tau2) / s2)))


def two_sided_alpha(sigmas: float) -> float:
    """The error of one two-sided normal test at `sigmas` standard errors."""
    return math.erfc(sigmas / math.sqrt(2.0))


def first_shift(
    merged: list[tuple[float, int, float]], min_n: int, alpha: float
) -> tuple[int, int, float, float] | None:
    """Two samples observed in time order, `merged` = sorted (at, side 0|1, value): the first
    observation at which the confidence sequence of mean(side 0) − mean(side 1) (error `alpha`
    over all looks, running intersection) excludes 0, as (n0, n1, difference, z); None if never.

    The variance of the difference is the larger of Welch's and the pooled one; two arms each
    constant (up to rounding) use a Bernoulli worst case (0.25 per value) instead, so a metric a
    fake replica reports as one constant per version is not a shift of 1e14 standard errors.
    Values are shifted by the first one (sums of squares without cancellation). From 2,000
    observations on, the boundary is checked at every k-th one (k = n // 1000): a confidence
    sequence holds at every n, so checking fewer of them keeps its error bound."""
    if not merged:
        return None
    ref = merged[0][2]
    n, s, q = [0, 0], [0.0, 0.0], [0.0, 0.0]
    low_max, high_min = -math.inf, math.inf
    for i, (_, side, x) in enumerate(merged):
        x -= ref
        n[side] += 1
        s[side] += x
        q[side] += x * x
        n0, n1 = n
        if n0 < min_n or n1 < min_n or (i >= 2000 and i % (i // 1000)):
            continue
        m0, m1 = s[0] / n0, s[1] / n1
        v0, v1 = max(q[0] - s[0] * m0, 0.0) / (n0 - 1), max(q[1] - s[1] * m1, 0.0) / (n1 - 1)
        diff = m0 - m1
        scale = max(1.0, abs(m0 + ref), abs(m1 + ref)) ** 2
        if v0 <= 1e-12 * scale and v1 <= 1e-12 * scale:  # both arms constant
            if abs(diff) <= 1e-9 * math.sqrt(scale):
                continue
            s2, pooled = 0.25 * (1 / n0 + 1 / n1), 0.25
        else:
            tot, ss = n0 + n1, s[0] + s[1]
            pooled = max(q[0] + q[1] - ss * ss / tot, 0.0) / (tot - 1)
            s2 = max(v0 / n0 + v1 / n1, pooled * (1 / n0 + 1 / n1))
        r = cs_radius(s2, 6.0 * pooled * 2 / min_n, alpha)
        low_max, high_min = max(low_max, diff - r), min(high_min, diff + r)
        if low_max > 0 or high_min < 0:
            return n0, n1, diff, diff / math.sqrt(s2)
    return None
