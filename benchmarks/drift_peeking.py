"""Looking at the drift alarms every second: how often two equal versions raise one anyway.

A/A runs: a side metric drawn from one distribution for both the canary and its parent (a
Bernoulli rate like `tool_call_error`, or a skewed continuous one like `answer_tokens`), the
two arms' values interleaved in time, looked at after every value once each arm has
`--min-samples`, up to `--samples` per arm. Printed per alarm threshold (`alarm_sigmas`): the
share of runs with a false alarm, and for an A/B run (the canary's mean `--shift` standard
deviations away) the share alarmed and the median values per arm it took.

    fixed       |Welch z| > sigmas at any look (the alarm before the sequential test)
    sequence    gateway/drift.py's shifts(): a confidence sequence with the error of one
                two-sided test at `sigmas` over all looks (what the controller uses)

    python benchmarks/drift_peeking.py [--runs 300] [--samples 1000] [--sigmas 2,3,4]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

from gateway.drift import shifts
from gateway.sequence import two_sided_alpha

Draw = Callable[[random.Random, float], float]


def bernoulli(rng: random.Random, shift: float) -> float:
    p = 0.2 + shift * math.sqrt(0.2 * 0.8)
    return float(rng.random() < p)


def lognormal(rng: random.Random, shift: float) -> float:
    sd = math.sqrt((math.exp(0.25) - 1) * math.exp(2 * 4.0 + 0.25))  # of lognormal(4, 0.5)
    return rng.lognormvariate(4.0, 0.5) + shift * sd


def fixed_first(c: list[float], p: list[float], sigmas: float, min_n: int) -> int | None:
    """The first look (values per arm) at which |Welch z| exceeds `sigmas`."""
    sc = qc = sp = qp = 0.0
    for n in range(1, len(c) + 1):
        sc, qc, sp, qp = sc + c[n - 1], qc + c[n - 1] ** 2, sp + p[n - 1], qp + p[n - 1] ** 2
        if n < min_n:
            continue
        mc, mp = sc / n, sp / n
        var = (max(qc - sc * mc, 0.0) + max(qp - sp * mp, 0.0)) / (n - 1)
        se = math.sqrt(var / n) or math.sqrt(0.5 / n)
        if abs(mc - mp) / se > sigmas:
            return n
    return None


def sequence_first(c: list[float], p: list[float], sigmas: float, min_n: int) -> int | None:
    timed_c = [(2.0 * i, x) for i, x in enumerate(c)]  # interleaved: canary, parent, canary, ...
    timed_p = [(2.0 * i + 1, x) for i, x in enumerate(p)]
    found = shifts({"m": timed_c}, {"m": timed_p}, sigmas, min_n)
    return found[0].decided_n if found else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--samples", type=int, default=1000, help="values per arm")
    ap.add_argument("--min-samples", type=int, default=30)
    ap.add_argument("--sigmas", default="2,3,4")
    ap.add_argument("--shift", type=float, default=0.3, help="A/B: standard deviations")
    args = ap.parse_args()
    print(
        f"{args.runs} runs, up to {args.samples} values per arm, looked at after every value from "
        f"{args.min_samples} on"
    )
    head = f"{'metric':10s}{'sigmas':>7s}{'alpha':>9s} {'method':9s}"
    print(head + f"{'A/A false':>10s}{'A/B found':>10s}{'median n':>9s}")
    for metric, draw in (("bernoulli", bernoulli), ("lognormal", lognormal)):
        for sigmas in (float(s) for s in args.sigmas.split(",")):
            for name, first in (("fixed", fixed_first), ("sequence", sequence_first)):
                rng = random.Random(0)

                def arm(shift: float, draw: Draw = draw, rng: random.Random = rng) -> list[float]:
                    return [draw(rng, shift) for _ in range(args.samples)]

                t0 = time.process_time()
                false = sum(
                    first(arm(0.0), arm(0.0), sigmas, args.min_samples) is not None for _ in range(args.runs)
                )
                took = [
                    n
                    for _ in range(args.runs)
                    if (n := first(arm(args.shift), arm(0.0), sigmas, args.min_samples)) is not None
                ]
                cpu_ms = (time.process_time() - t0) * 1000 / (2 * args.runs)
                print(
                    f"{metric:10s}{sigmas:7.1f}{two_sided_alpha(sigmas):9.2e} {name:9s}"
                    f"{false / args.runs:10.1%}{len(took) / args.runs:10.1%}"
                    f"{statistics.median(took) if took else float('nan'):9.0f}"
                    f"   ({cpu_ms:.1f} CPU-ms a run)"
                )


if __name__ == "__main__":
    main()
