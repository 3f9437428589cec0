"""The learning benchmark's table and PNG, from its figures alone (no stack needed: tested on
synthetic figures).

A row is one version: {"version", "status", "at_s" (seconds from the start to its
registration), "live" (mean live reward), "episodes", "heldout" ({task: mean}), "entropy",
"kl_base", "ratio_mean", "ratio_min", "ratio_max", "clipped_frac", "tokens" (trained, all
versions up to this one), "gate" ((verdict, version's, parent's held-out reward) from the eval
gate, when it ran)}; a step is the learner's step figures with "at_s" added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "version",
    "status",
    "at",
    "live",
    "eps",
    "held-out",
    "gate",
    "entropy",
    "KL",
    "ratio",
    "clip",
    "tokens",
)


def _num(x: Any, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def heldout_cell(heldout: Mapping[str, float] | None) -> str:
    if not heldout:
        return "–"
    return " ".join(f"{task[:2]} {score:.2f}" for task, score in heldout.items())


def gate_cell(gate: Sequence[Any] | None) -> str:
    """The eval gate's verdict with the version's and its parent's held-out reward."""
    if not gate:
        return "–"
    verdict, mine, parent = gate
    return f"{verdict} {mine:.2f}/{parent:.2f}"


def row_cells(r: Mapping[str, Any]) -> list[str]:
    low, high = _num(r.get("ratio_min"), ".2f"), _num(r.get("ratio_max"), ".1f")
    ratio = f"{_num(r.get('ratio_mean'), '.2f')} ({low}–{high})"
    if r.get("ratio_mean") is None:
        ratio = "–"
    return [
        str(r["version"]),
        str(r.get("status", "")),
        f"{r['at_s'] / 60:.1f}m" if r.get("at_s") is not None else "–",
        _num(r.get("live"), ".3f"),
        str(r.get("episodes", 0)),
        heldout_cell(r.get("heldout")),
        gate_cell(r.get("gate")),
        _num(r.get("entropy"), ".2f"),
        _num(r.get("kl_base"), ".3f"),
        ratio,
        _num(r.get("clipped_frac"), ".1%"),
        str(r.get("tokens", 0)),
    ]


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table, one line per version (held-out: task's first two letters and score)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def plot(
    rows: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]], path: Path, title: str
) -> Path:
    """Held-out reward per task and live reward per version over time (left); entropy and KL
    to the base per learner step (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    timed = [r for r in rows if r.get("at_s") is not None]
    tasks = sorted({t for r in timed for t in (r.get("heldout") or {})})
    for task in tasks:
        pts = [(r["at_s"] / 60, r["heldout"][task]) for r in timed if task in (r.get("heldout") or {})]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"held-out {task}")
    live = [(r["at_s"] / 60, r["live"]) for r in timed if r.get("live") is not None]
    ax.plot([p[0] for p in live], [p[1] for p in live], "k--", marker="x", label="live reward (all tasks)")
    ax.set_xlabel("minutes (version registered)")
    ax.set_ylabel("reward")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title)
    xs = [s["at_s"] / 60 for s in steps]
    bx.plot(xs, [s.get("entropy") for s in steps], label="entropy (nats/token)")
    bx.plot(xs, [s.get("entropy_base") for s in steps], ":", label="base entropy, same tokens")
    kx = bx.twinx()
    kx.plot(xs, [s.get("kl_base") for s in steps], "r", label="KL to base")
    kx.set_ylabel("KL to base (nats/token)", color="r")
    bx.set_xlabel("minutes (learner step)")
    bx.set_ylabel("entropy")
    bx.legend(fontsize=8, loc="upper left")
    kx.legend(fontsize=8, loc="upper right")
    bx.set_title("learner health per step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
