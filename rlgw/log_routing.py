"""Where the log lines of `rlgw up` and `rlgw demo` go while a live view holds the terminal.

Every library's records at the configured level go to `<data_dir>/rlgw.log`; only WARNING and
above also reach the terminal, printed above the live view (rich prints a console's output above
its live display). Nothing may write to stderr behind rich's back: uvicorn logs through the root
logger (rlgw/stack.py gives it no handlers of its own), `warnings` are captured as log records,
and tqdm progress bars (transformers loading weights in the learner's thread) are switched off.
HTTP clients' one-line-per-request INFO records (httpx, httpx2 — the openai SDK's — httpcore,
openai) are held at WARNING in every command (rlgw/options.py). docs/terminal.md says more.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rich.console import Console
from rich.text import Text

LOG_FILE = "rlgw.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "bold red"}


class ConsoleLines(logging.Handler):
    """WARNING and above, one line each, through a rich console (so above a live display)."""

    def __init__(self, console: Console, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.console = console
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = Text(self.format(record), style=STYLES.get(record.levelno, ""))
            self.console.print(line, soft_wrap=True)
        except Exception:
            self.handleError(record)


def route_logs(data_dir: Path, console: Console, level: str = "INFO") -> Path:
    """Send every log record at `level` to the data dir's log file, WARNING+ to `console`;
    returns the log file's path. Replaces the root logger's handlers (basicConfig's stderr)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = (data_dir / LOG_FILE).resolve()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setLevel(level.upper())
    to_file.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(to_file)
    root.addHandler(ConsoleLines(console))
    root.setLevel(min(to_file.level, logging.WARNING))
    logging.captureWarnings(True)  # `warnings` would write to stderr behind the live view's back
    os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm when a bar is made
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return path
