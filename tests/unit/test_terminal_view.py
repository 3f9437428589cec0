"""The terminal of `rlgw up` / `rlgw demo`: the live view's content, its line mode without a
terminal, the learner's phases, where log records go, and the start-up failure's likely fix.
(tests/integration/test_terminal_tmux.py watches the real thing in a tmux pane.)"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from gateway.config import VersionsConfig
from gateway.engine import EngineStartError
from gateway.metrics import Metrics
from gateway.versions import VersionRegistry
from learner.config import LearnerConfig
from learner.train import StepStats
from ledger.bus import MemoryBus
from ledger.published import PublishedVersion
from ledger.recorder import Recorder
from rlgw.config import Settings
from rlgw.learner_watch import LearnerWatch, step_line
from rlgw.live_view import LiveView, eval_result, heldout_of
from rlgw.log_routing import route_logs
from rlgw.startup_view import explain_start_failure, likely_fix, ready_block


def fake_stack(tmp_path: Path) -> Any:
    reg = VersionRegistry(VersionsConfig(), Recorder(MemoryBus()), lambda: "fake-base")
    settings = Settings(data_dir=tmp_path, learner=LearnerConfig(model="/models/tiny", batch_episodes=4))
    services = SimpleNamespace(versions=reg, metrics=Metrics())
    return SimpleNamespace(services=services, settings=settings, url="http://127.0.0.1:9/v1", engine=None)


def text_console(width: int = 160) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, force_terminal=False, color_system=None), out


def learner_log(msg: str, **extra: Any) -> None:
    logging.getLogger("learner.train").info(msg, extra=extra)


def step(n: int) -> StepStats:
    return StepStats(step=n, samples=3, tokens=120, entropy=2.5, kl_base=0.002, ratio_mean=0.98,
                     ratio_min=0.9, ratio_max=1.7, clipped_frac=0.05, seconds=0.4,
                     skipped=Counter(stale=2))  # fmt: skip


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_without_a_terminal_each_event_is_one_line_and_a_summary_follows(tmp_path: Path) -> None:
    stack = fake_stack(tmp_path)
    reg = stack.services.versions
    console, out = text_console()
    with LiveView(stack, console, title="t", summary_every_s=0.0) as view:
        assert not view.interactive
        v1 = reg.register(PublishedVersion(version="v1", adapter_path="/tmp/v1"))
        reg.record_load(v1, {"http://r/v1": "loaded"}, {"load_ms": 12.0})  # "loaded" is not news; "canary" is
        for i in range(30):
            reg.observe_request("base", True, 5.0)
            reg.observe_score("v1", f"e{i}", 1.0)
        learner_log("learner loading x", learner_phase="loading")
        learner_log("learner step=1", learner_step=step(1))
        view.update()
        reg.promote("v1", "reward +0.300 over its parent")
        view.update()
    lines = out.getvalue().splitlines()
    events = [line for line in lines if "summary" not in line]
    assert [line.split()[2] for line in events if line.split()[1] == "v1"] == [
        "registered",
        "canary",
        "promoted",
    ]
    assert any("first step done" in line for line in events)
    summaries = [line for line in lines if " summary " in line]
    assert len(summaries) == 3  # two updates and the closing one
    assert "serving v1 (reward 1.000, 30 episodes)" in summaries[-1]
    assert "entropy 2.500" in summaries[-1] and "skipped stale 2" in summaries[-1]


def test_the_live_view_holds_the_table_the_learner_and_the_events(tmp_path: Path) -> None:
    stack = fake_stack(tmp_path)
    reg = stack.services.versions
    for i in range(12):  # more versions than fit: the serving and canary ones always show
        training = {"training": {"entropy": 2.31, "kl_base": 0.042}} if i == 0 else {}
        v = reg.register(PublishedVersion(version=f"v{i}", adapter_path=f"/tmp/v{i}", data_window=training))
        reg.observe_score(v.id, "e", 0.5)
    reg.start_canary(reg.versions["v0"])
    view = LiveView(stack, Console(width=160, height=24), title="rl-gateway", interactive=True)
    console, out = text_console()
    console.print(view.render())
    screen = out.getvalue()
    assert screen.count("rl-gateway —") == 1
    assert "v0 " in screen and "canary" in screen and "base" in screen
    assert "2.31" in screen and "0.042" in screen  # the canary's entropy and KL to the base
    assert "learner: starting" in screen
    assert "requests 0 · scored episodes 12" in screen
    assert len(screen.splitlines()) <= 24 + 2, screen  # fits the terminal (with the events)
    assert screen.splitlines()[-1].split()[1:3] == ["v0", "canary"]


def test_the_held_out_column_reads_the_newest_eval_gate_event() -> None:
    def event(vid: str, kind: str, rows: list[dict[str, Any]] | None = None) -> SimpleNamespace:
        return SimpleNamespace(version=vid, event=kind, figures={"rows": rows or []})

    def row(rubric: str, metric: str, n: int, version: float, parent: float) -> dict[str, Any]:
        return {"rubric": rubric, "metric": metric, "n": n, "version": version, "parent": parent}

    events = [
        event("v1", "eval_failed", [row("a", "reward", 4, 0.1, 0.5)]),
        event("v2", "canary"),
        event("v1", "eval_passed", [row("a", "reward", 3, 1.0, 0.0), row("b", "reward", 1, 0.0, 1.0),
                                    row("a", "words", 3, 9.0, 9.0)]),
    ]  # fmt: skip
    assert eval_result(events, "v1") == ("passed", 0.75, 0.25)  # reward rows only, weighted by n
    assert heldout_of(events, "v1") == 0.75
    assert heldout_of(events, "v2") is None


def test_learner_phases_in_order() -> None:
    watch = LearnerWatch().attach()
    try:
        assert watch.line(0, 32) == "learner: starting"
        learner_log("learner loading /m", learner_phase="loading")
        assert watch.line(0, 32).startswith("learner: loading the model")
        learner_log("learner loaded /m", learner_phase="ready")
        assert watch.line(7, 32) == "learner: waiting for 32 scored episodes a step (7 so far)"
        learner_log("learner first step", learner_phase="first_step")
        assert watch.line(40, 32).startswith("learner: first training step")
        learner_log("learner step=1", learner_step=step(1))
        line = watch.line(40, 32)
        assert line.startswith("learner: step 1 · entropy 2.500 · KL 0.0020 · ratio 0.980 (0.90–1.70)")
        assert "clipped 5.0%" in line and "300 tokens/s" in line
        newer = {"step": 3, "entropy": 2.0, "kl_base": 0.01, "ratio_mean": 1.0, "ratio_min": 0.5,
                 "ratio_max": 1.5, "clipped_frac": 0.02, "tokens_per_s": 40.0, "skipped": {}}  # fmt: skip
        assert step_line(newer, 3) == (  # the learner's newer names (ledger/training.py)
            "step 3 · entropy 2.000 · KL 0.0100 · ratio 1.000 (0.50–1.50) · clipped 2.0% · "
            "40 tokens/s · skipped none"
        )
        changes = watch.take_changes()
        assert [c.split(":")[1].split()[0] for c in changes] == ["loading", "model", "first", "first"]
    finally:
        watch.detach()


def test_log_records_go_to_the_file_and_only_warnings_to_the_terminal(
    tmp_path: Path, restore_logging: None
) -> None:
    console, out = text_console()
    path = route_logs(tmp_path, console, "INFO")
    logging.getLogger("some.library").info("per-request detail")
    logging.getLogger("some.library").warning("the store is slow")
    for h in logging.getLogger().handlers:
        h.flush()
    assert out.getvalue().strip() == "WARNING some.library: the store is slow"
    logged = path.read_text()
    assert "per-request detail" in logged and "the store is slow" in logged


def test_a_failed_engine_start_shows_its_log_tail_and_the_likely_fix() -> None:
    console, out = text_console()
    log = "\n".join(f"INFO line {i}" for i in range(30)) + "\nModuleNotFoundError: No module named 'vllm'"
    explain_start_failure(console, EngineStartError("engine exited with 1\n" + log))
    shown = out.getvalue()
    assert "could not start: engine exited with 1" in shown
    assert "INFO line 29" in shown and "INFO line 10" not in shown  # the tail only
    assert "likely fix: vLLM is not installed here" in shown
    assert "memory" in (likely_fix("engine exited with -9\n...") or "")
    assert likely_fix("all fine") is None


def test_the_ready_block_says_where_everything_is(tmp_path: Path) -> None:
    console, out = text_console()
    console.print(ready_block(fake_stack(tmp_path), tmp_path / "rlgw.log"))
    shown = out.getvalue()
    for want in ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/dashboard", "http://127.0.0.1:9/metrics"):
        assert want in shown
    assert str(tmp_path / "rlgw.log") in shown
