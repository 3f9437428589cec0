"""Sequential statistics for the canary: a running mean and variance, and the radius of a
normal-mixture confidence sequence (gateway/canary.py says how it is used; docs/versions.md
why a fixed-sample interval cannot be looked at every second)."""

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
