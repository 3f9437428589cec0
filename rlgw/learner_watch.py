"""Follows the in-process learner through its log records, for the live view.

The learner marks its phases with `extra` fields on its INFO records (learner/train.py,
learner/loop.py): `learner_phase` ("loading" the model, "ready", "first_step" started) and,
after each step, `learner_step` (its StepStats). This handler keeps the newest of each; it never formats
or prints a record itself (the log file gets them as usual).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ledger.training import step_figures

LOGGER = "learner"


class LearnerWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.phase = "starting"  # starting | loading | waiting | first_step | training
        self.since = time.monotonic()
        self.last: dict[str, Any] | None = None  # the newest step's figures (ledger/training.py)
        self.steps = 0
        self.first_step_s: float | None = None  # how long the first step took
        self.changes: list[str] = []  # phase changes not yet taken by `take_changes`
        self._lock = threading.Lock()
        self._logger = logging.getLogger(LOGGER)
        self._level = self._logger.level

    def attach(self) -> LearnerWatch:
        self._logger.addHandler(self)
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)  # the file handler keeps its own level
        return self

    def detach(self) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def emit(self, record: logging.LogRecord) -> None:
        phase = getattr(record, "learner_phase", None)
        stats = getattr(record, "learner_step", None)
        with self._lock:
            if phase == "loading":
                self._move("loading", "learner: loading the model")
            elif phase == "ready":
                self._move("waiting", f"learner: model loaded in {time.monotonic() - self.since:.0f} s")
            elif phase == "first_step":
                self._move("first_step", "learner: first training step started")
            if stats is not None:
                self.last = step_figures(stats)
                self.steps += 1
                if self.phase != "training":
                    self.first_step_s = time.monotonic() - self.since
                    self._move("training", f"learner: first step done in {self.first_step_s:.0f} s")

    def _move(self, phase: str, change: str) -> None:
        self.phase, self.since = phase, time.monotonic()
        self.changes.append(change)

    def take_changes(self) -> list[str]:
        with self._lock:
            out, self.changes = self.changes, []
            return out

    def line(self, scored: int, batch_episodes: int) -> str:
        """Where the learner is, in one line (`scored`: episodes scored so far)."""
        with self._lock:
            waited = time.monotonic() - self.since
            if self.phase == "starting":
                return "learner: starting"
            if self.phase == "loading":
                return f"learner: loading the model … {waited:.0f} s"
            if self.phase == "waiting":
                return f"learner: waiting for {batch_episodes} scored episodes a step ({scored} so far)"
            if self.phase == "first_step":
                return f"learner: first training step … {waited:.0f} s"
            return "learner: " + step_line(self.last or {}, self.steps)


def step_line(f: dict[str, Any], steps: int) -> str:
    """A step's health figures in one line (entropy, KL, ratios, clipped share, tokens/s, skips);
    either name of a renamed figure (ledger/training.py)."""

    def num(spec: str, *names: str) -> str:
        value = next((f[n] for n in names if f.get(n) is not None), None)
        return "–" if value is None else format(value, spec)

    skipped = ", ".join(f"{k} {n}" for k, n in sorted((f.get("skipped") or {}).items())) or "none"
    ratio = f"ratio {num('.3f', 'ratio_mean')} ({num('.2f', 'ratio_min')}–{num('.2f', 'ratio_max')})"
    if f.get("ratio_min") is None:
        ratio = f"ratio {num('.3f', 'ratio_mean')} (max {num('.2f', 'ratio_max')})"
    return (
        f"step {f.get('step', steps)} · entropy {num('.3f', 'entropy')} · KL {num('.4f', 'kl_base', 'kl')} · "
        f"{ratio} · clipped {num('.1%', 'clipped_frac', 'clipped_fraction')} · "
        f"{num('.0f', 'tokens_per_s')} tokens/s · skipped {skipped}"
    )
