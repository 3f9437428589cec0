"""`rlgw demo`: the whole loop on one machine, shown live.

`rlgw up` with the built-in tiny model, the colour rubric and simulated users; the learner
trains on their scored traffic, each version is canaried and promoted on live reward, and once
a trained version serves well a deliberately broken version (the serving adapter with its
weights replaced by noise) is injected as a canary, to be rolled back automatically.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from ledger.published import PublishedVersion
from rlgw.config import Settings
from rlgw.demo_tasks import TASK_RUBRICS, TaskTraffic, run_task_users
from rlgw.demo_users import COLOUR_RUBRIC, Traffic, run_users
from rlgw.live_view import LiveView
from rlgw.log_routing import route_logs
from rlgw.stack import InProcessPublisher, Stack
from rlgw.startup_view import start_with_progress

console = Console(stderr=True)
BROKEN = "broken"


def demo_settings(settings: Settings, *, tiny: bool = True) -> Settings:
    """Tuned for a 2-core CPU: small batches, quick canary decisions. The built-in tiny random
    model also gets its own learner preset; a real model (`tiny=False`) keeps the learner's
    defaults, which are for a pretrained model (learner/config.py)."""
    s = settings
    s.rewards.idle_timeout_s = min(s.rewards.idle_timeout_s, 10.0)
    s.versions.canary_share = 0.3
    s.versions.min_episodes = 20
    s.versions.confidence = 0.9
    s.versions.max_canary_episodes = 120  # an undecided canary makes way for newer versions soon
    # Canaries gate what serves, so traffic lags the learner by several versions; the truncated
    # importance weights correct for that, so only very old samples are dropped.
    s.learner.max_staleness = 50
    if not tiny:
        return s
    # Measured on the tiny random model: LoRA learns only when it also adapts lm_head, at lr 1e-2.
    if "lm_head" not in s.learner.lora_targets:
        s.learner.lora_targets = [*s.learner.lora_targets, "lm_head"]
    s.learner.lr = 1e-2
    s.learner.batch_episodes = 32
    s.learner.steps_per_version = 4
    return s


def keep_models(data_dir: Path) -> None:
    """Empty a demo data dir for a fresh run, keeping its imported models (models/, a minute to redo)."""
    for child in data_dir.iterdir():
        if child.name == "models":
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def corrupt_adapter(src: str, dst: Path, seed: int = 0) -> Path:
    """A copy of an adapter whose LoRA weights are replaced by large noise: a broken version."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    gen = torch.Generator().manual_seed(seed)
    broken = {
        k: torch.randn(v.shape, generator=gen, dtype=torch.float32).to(v.dtype) * 2.0
        for k, v in tensors.items()
    }
    save_file(broken, str(weights))
    return dst


def traffic_line(traffic: Traffic) -> str:
    return (
        f"simulated users: episodes {traffic.episodes} · requests {traffic.requests} · "
        f"feedback {traffic.feedback} · errors {traffic.errors}"
    )


def serving_reward(stack: Stack, last: int = 60, at_least: int = 1) -> float | None:
    """The serving version's mean reward over its last `last` scored episodes."""
    reg = stack.services.versions
    rewards = sorted(reg.stats.rewards_of(reg.serving))[-last:]
    return sum(r for _, r in rewards) / len(rewards) if len(rewards) >= at_least else None


def inject_broken(stack: Stack) -> None:
    """Register a corrupted copy of the serving adapter: the eval gate stops it before any live
    traffic (docs/versions.md); with the gate off, it is canaried at once (live reward rolls it back)."""
    import asyncio

    reg, services = stack.services.versions, stack.services
    path = corrupt_adapter(str(reg.versions[reg.serving].adapter_path), stack.settings.data_dir / "broken")
    broken = PublishedVersion(
        version=BROKEN, adapter_path=str(path), parent=reg.serving, data_window={"injected": True}
    )
    InProcessPublisher(services).publish(broken)
    if not reg.gated and reg.canary != BROKEN:
        asyncio.run_coroutine_threadsafe(services.controller.canary_now(BROKEN), services.loop).result(30)


def start_users(stack: Stack, users: int, stop: threading.Event, real: bool) -> Callable[[], str]:
    """Simulated users in a thread: colour askers for the tiny model, the task mix for a real
    one (rlgw/demo_tasks.py); returns the traffic line's source."""
    if real:
        mix = TaskTraffic()
        target: Callable[[], None] = lambda: run_task_users(stack.url, users, stop, mix)  # noqa: E731
        line = lambda: f"simulated users (task mix): episodes {mix.episodes} · errors {mix.errors}"  # noqa: E731
    else:
        traffic = Traffic()
        target = lambda: run_users(stack.url, users, stop, traffic)  # noqa: E731
        line = lambda: traffic_line(traffic)  # noqa: E731
    threading.Thread(target=target, name="demo-users", daemon=True).start()
    return line


def run_demo(
    settings: Settings,
    *,
    minutes: float,
    users: int,
    json_path: Path | None,
    fresh: bool,
    model: str | None = None,
) -> dict[str, Any]:
    """`model`: None for the built-in tiny model (colour rubric), else a real model on the task mix."""
    settings = demo_settings(settings, tiny=model is None)
    if fresh and settings.data_dir.exists():
        keep_models(settings.data_dir)
    started, began = time.monotonic(), time.time()
    log_file = route_logs(settings.data_dir, console, settings.telemetry.log_level)
    rubrics = [COLOUR_RUBRIC] if model is None else TASK_RUBRICS
    stack = start_with_progress(settings, console, log_file, rubrics=rubrics, model=model)
    stop_users = threading.Event()
    extra = start_users(stack, users, stop_users, real=model is not None)
    reg = stack.services.versions
    note, broken_at, rolled_back_at = "learning", None, None
    deadline = started + minutes * 60
    view = LiveView(stack, console, title="rl-gateway demo", extra=extra, since=began)
    stopped = threading.Event()  # SIGTERM ends the demo as its deadline would: summary, clean close
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        with view:
            while time.monotonic() < deadline and not stopped.is_set():
                time.sleep(0.5)
                view.update(note)
                good = serving_reward(stack, last=50, at_least=50)
                late = time.monotonic() > started + 0.75 * minutes * 60
                if broken_at is None and reg.serving != "base" and ((good or 0.0) >= 0.9 or late):
                    inject_broken(stack)
                    broken_at, note = time.time(), "broken version injected"
                broken = reg.versions.get(BROKEN)
                if rolled_back_at is None and broken is not None and broken.status == "rolled_back":
                    rolled_back_at, note = time.monotonic(), "broken version rolled back automatically"
                elif rolled_back_at is None and broken is not None and broken.status == "eval_failed":
                    rolled_back_at, note = time.monotonic(), "broken version stopped by the eval gate"
                if rolled_back_at is not None and time.monotonic() - rolled_back_at > 20:
                    break  # the serving version's live reward after the drill, then stop
    finally:
        stop_users.set()
        summary = summarise(stack, started, broken_at)
        time.sleep(1)  # the users see the stop and close their clients
        console.print("stopping …")
        stack.close()
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2))
        plot(stack, json_path.with_suffix(".png"), started_wall=time.time() - (time.monotonic() - started))
    return summary


def summarise(stack: Stack, started: float, broken_at: float | None) -> dict[str, Any]:
    reg = stack.services.versions
    t0 = time.time() - (time.monotonic() - started)
    listing = reg.listing()
    decisions = [
        e for e in reg.events if e.event in ("promoted", "rolled_back", "eval_passed", "eval_failed")
    ]

    def entries(kind: str) -> list[dict[str, Any]]:
        return [
            {
                "version": e.version,
                "at": round(e.created_at - t0, 1),
                "reason": e.reason,
                "figures": e.figures,
            }
            for e in decisions
            if e.event == kind
        ]

    promotions, rollbacks = entries("promoted"), entries("rolled_back")
    base = next(v for v in listing if v["id"] == "base")
    passed, failed = entries("eval_passed"), entries("eval_failed")
    broken_rb = next((r for r in rollbacks + failed if r["version"] == BROKEN), None)
    return {
        "baseline_reward": base["reward"],
        "final_reward": serving_reward(stack),
        "serving": reg.serving,
        "versions": [{k: v[k] for k in ("id", "parent", "status", "episodes", "reward")} for v in listing],
        "promotions": promotions,
        "rollbacks": rollbacks,
        "eval_passed": passed,  # the eval gate's verdicts (docs/versions.md), each with its report
        "eval_failed": failed,
        "seconds_to_first_promotion": promotions[0]["at"] if promotions else None,
        "broken_rolled_back_after_s": None
        if broken_at is None or broken_rb is None
        else round(broken_rb["at"] - (broken_at - t0), 1),
        "seconds": round(time.time() - t0, 1),
    }


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as the terminal shows it: no per-version rows and no decision's figures (the
    eval reports run to dozens of lines); `--json` writes the whole."""
    decisions = ("promotions", "rollbacks", "eval_passed", "eval_failed")
    out = {k: v for k, v in summary.items() if k != "versions"}
    for k in decisions:
        out[k] = [{f: e[f] for f in ("version", "at", "reason")} for e in summary.get(k, [])]
    return out


def plot(stack: Stack, path: Path, started_wall: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reg = stack.services.versions
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for vid in list(reg.versions):
        points = sorted(reg.stats.rewards_of(vid))
        if not points:
            continue
        xs = [t - started_wall for t, _ in points]
        window = 20
        ys = [
            sum(r for _, r in points[max(0, i - window + 1) : i + 1])
            / len(points[max(0, i - window + 1) : i + 1])
            for i in range(len(points))
        ]
        ax.plot(xs, ys, label=f"{vid} ({len(points)} ep.)")
    for e in reg.events:
        if e.event in ("promoted", "rolled_back"):
            ax.axvline(
                e.created_at - started_wall, color="green" if e.event == "promoted" else "red", alpha=0.3
            )
    ax.set_xlabel("seconds")
    ax.set_ylabel("live reward (rolling mean of 20 episodes)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("rl-gateway demo: live reward per version")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
