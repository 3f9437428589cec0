"""The terminal of `rlgw up` and `rlgw demo` while the loop runs.

In a terminal: one live view, redrawn in place (rich Live) — the versions table (status,
share, live reward with its interval, episodes), a traffic line, the learner's line (loading,
waiting, first step, then each step's health figures) and, under them, the newest version
events (registered, canary, promoted, rolled back, alarms, eval-gate results). Log records
reach the terminal only at WARNING and above, printed above the view (rlgw/log_routing.py).

Without a terminal (CI, `| tee`): one line per version event or learner phase change as it
happens, and a summary line every `summary_every_s`; nothing per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ledger.training import training_summary
from rlgw.learner_watch import LearnerWatch

QUIET_EVENTS = ("loaded", "unloaded", "base_adapter")  # routine steps in every version's life
STATUS_STYLE = {"serving": "green", "canary": "yellow", "rolled_back": "red", "failed": "red"}
EVENT_STYLE = {"promoted": "green", "rolled_back": "red", "load_failed": "red", "canary": "yellow"}
EVENTS_SHOWN = 10


def request_count(metrics: Any) -> int:
    """Requests the gateway answered so far (its Prometheus counter, every label)."""
    try:
        return int(
            sum(s.value for m in metrics.requests.collect() for s in m.samples if s.name.endswith("_total"))
        )
    except AttributeError:
        return 0


def eval_result(events: Any, vid: str) -> tuple[str, float, float] | None:
    """(verdict, version's held-out reward, its parent's) from the newest eval-gate event of
    `vid` (`eval_passed` / `eval_failed`, whose figures are the evaluation's report,
    rewards/eval_report.py): the rubrics' reward rows, averaged weighted by prompts; None before
    the gate ran or when its report has no reward row."""
    for e in reversed(list(events)):
        if e.version != vid or e.event not in ("eval_passed", "eval_failed"):
            continue
        rows = [r for r in (e.figures or {}).get("rows") or [] if r.get("metric") == "reward" and r.get("n")]
        n = sum(r["n"] for r in rows)
        if not n:
            return None
        mine = sum(r["version"] * r["n"] for r in rows) / n
        theirs = sum(r["parent"] * r["n"] for r in rows) / n
        return e.event.removeprefix("eval_"), mine, theirs
    return None


def heldout_of(events: Any, vid: str) -> float | None:
    """The version's held-out reward by the eval gate (`eval_result`), None before it ran."""
    found = eval_result(events, vid)
    return None if found is None else found[1]


def event_text(e: Any) -> Text:
    at = time.strftime("%H:%M:%S", time.localtime(e.created_at))
    line = Text(f"{at}  {e.version:<14} ")
    style = EVENT_STYLE.get(e.event, "bold" if e.event.startswith(("alarm", "eval")) else "")
    line.append(f"{e.event:<12}", style=style)
    return line.append(f" {e.reason}" if e.reason else "")


class LiveView:
    """`with LiveView(stack, ...) as view:` then `view.update(note)` every half second or so."""

    def __init__(
        self,
        stack: Any,
        console: Console,
        *,
        title: str,
        extra: Callable[[], str] | None = None,
        summary_every_s: float = 30.0,
        interactive: bool | None = None,
        since: float | None = None,
    ) -> None:
        """`since`: wall-clock time from which version events are news (default: all of them)."""
        self.stack, self.console, self.title, self.extra = stack, console, title, extra
        self.interactive = console.is_terminal if interactive is None else interactive
        self.summary_every_s = summary_every_s
        self.watch = LearnerWatch()
        self.note = ""
        self.started = time.monotonic()
        self._live: Live | None = None
        self.since = since
        self._seen_events = 0
        self._last_summary = time.monotonic()
        self._last_render: RenderableType = Text("")

    @property
    def registry(self) -> Any:
        return self.stack.services.versions

    def __enter__(self) -> LiveView:
        self.watch.attach()
        if self.interactive:
            self._live = Live(
                get_renderable=self.render, console=self.console, refresh_per_second=2, transient=False
            )
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()  # leaves the last view on the screen
        else:
            self._print_news()
            self.console.print(self.summary(), soft_wrap=True)
        self.watch.detach()

    def update(self, note: str = "") -> None:
        """Take the owner's note; without a terminal, print what happened since the last call."""
        self.note = note
        if self._live is not None:
            return  # the live display redraws itself
        self._print_news()
        if time.monotonic() - self._last_summary >= self.summary_every_s:
            self._last_summary = time.monotonic()
            self.console.print(self.summary(), soft_wrap=True)

    # ---- without a terminal ----------------------------------------------------------------
    def _print_news(self) -> None:
        events = self.registry.events
        new, self._seen_events = events[self._seen_events :], len(events)
        for e in new:
            if self._news(e):
                self.console.print(event_text(e), soft_wrap=True, highlight=False)
        for change in self.watch.take_changes():
            self.console.print(f"{time.strftime('%H:%M:%S')}  {change}", soft_wrap=True, highlight=False)

    def _news(self, e: Any) -> bool:
        return e.event not in QUIET_EVENTS and (self.since is None or e.created_at >= self.since)

    def summary(self) -> str:
        reg = self.registry
        parts = [f"{time.strftime('%H:%M:%S')}  summary  {self._elapsed()}"]
        for role, vid in (("serving", reg.serving), ("canary", reg.canary)):
            if vid is not None:
                rewards = [r for _, r in reg.stats.rewards_of(vid)]
                mean = f"{sum(rewards) / len(rewards):.3f}" if rewards else "–"
                parts.append(f"{role} {vid} (reward {mean}, {len(rewards)} episodes)")
        parts.append(self.traffic_line())
        parts.append(self.learner_line())
        return " · ".join(parts)

    # ---- in a terminal -----------------------------------------------------------------------
    def render(self) -> RenderableType:
        try:
            self._last_render = self._render()
        except RuntimeError:  # a dict the event loop's thread changed while we read it: next time
            pass
        return self._last_render

    def _render(self) -> RenderableType:
        events = [e for e in list(self.registry.events) if self._news(e)][-EVENTS_SHOWN:]
        rows_fit = max(3, self.console.size.height - len(events) - 12)
        table = self.versions_table(rows_fit)
        lines = [Text(self.traffic_line()), Text(self.learner_line())]
        if self.note:
            lines.append(Text(self.note, style="bold"))
        log = Text("events", style="bold underline")
        for e in events:
            log.append("\n").append_text(event_text(e))
        if not events:
            log.append("\nwaiting for the first version …", style="dim")
        return Group(table, *lines, log)

    def versions_table(self, max_rows: int) -> Table:
        reg = self.registry
        table = Table(title=f"{self.title} — {self._elapsed()}", title_justify="left")
        for col in (
            "version",
            "status",
            "share",
            "episodes",
            "live reward",
            "interval",
            "held-out",
            "entropy",
            "KL",
            "parent",
        ):
            table.add_column(col)
        listing = [
            v for v in reg.listing() if v["status"] in ("serving", "canary") or v["episodes"] or v["share"]
        ]
        active = [v for v in listing if v["status"] in ("serving", "canary")]
        rest = [v for v in listing if v not in active][-max(0, max_rows - len(active)) :]
        for v in sorted(active + rest, key=lambda v: v["created_at"]):
            interval = v["reward_interval"]
            table.add_row(
                v["id"],
                Text(v["status"], style=STATUS_STYLE.get(v["status"], "")),
                f"{v['share']:.0%}",
                str(v["episodes"]),
                "-" if v["reward"] is None else f"{v['reward']:.3f}",
                "-" if not interval else f"[{max(0.0, interval[0]):.2f}, {min(1.0, interval[1]):.2f}]",
                *self.health_cells(v["id"]),
                v["parent"] or "-",
            )
        return table

    def health_cells(self, vid: str) -> list[str]:
        """A version's held-out reward (the eval gate's, once it has run) and its training's mean
        entropy and KL to the base (ledger/training.py); "-" for what it lacks."""
        version = self.registry.versions.get(vid)
        fig = training_summary(version.data_window) if version is not None else {}
        held = heldout_of(self.registry.events, vid)

        def num(x: Any, spec: str) -> str:
            return "-" if x is None else format(x, spec)

        return [
            num(held, ".3f"),
            num(fig.get("entropy"), ".2f"),
            num(fig.get("kl_base", fig.get("kl")), ".3f"),
        ]

    # ---- shared lines ---------------------------------------------------------------------------
    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"

    def scored(self) -> int:
        reg = self.registry
        return sum(len(reg.stats.rewards_of(vid)) for vid in list(reg.versions))

    def traffic_line(self) -> str:
        if self.extra is not None:
            return self.extra()
        metrics = getattr(self.stack.services, "metrics", None)
        return f"requests {request_count(metrics)} · scored episodes {self.scored()}"

    def learner_line(self) -> str:
        if not self.stack.settings.learner.model:
            return "learner: off (no model to train)"
        return self.watch.line(self.scored(), self.stack.settings.learner.batch_episodes)
