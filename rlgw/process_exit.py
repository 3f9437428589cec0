"""How an `rlgw` process ends: like the interpreter would, minus the native libraries' teardown noise.

At interpreter exit, nanobind-based extensions (triton, which torch loads with the learner)
report every object of theirs still alive: about a hundred `nanobind: leaked … instance/type/
function` lines after `rlgw demo`, burying its summary. The reports come from a C-level exit
handler (Py_AtExit) that runs after Python's own finalisation, and triton binds no switch for
them (nanobind's `set_leak_warnings` is C++ only), so the one way round is not to reach that
stage. `run_and_exit` runs the command, then does what finalisation does that matters here —
join non-daemon threads (and run threading's own exit hooks), run the `atexit` handlers
(OpenTelemetry flushes spans there, logging closes its files), flush stdout and stderr — and
ends with `os._exit(status)`. The status is the command's: 0, its `typer.Exit` code, 2 for a
usage error, 1 with the traceback printed (by `sys.excepthook`) for an uncaught error, 130 for
Ctrl-C. docs/terminal.md says more.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn


def exit_status(code: Any) -> int:
    """The process status for `SystemExit(code)`, as the interpreter maps it (a message: 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_and_exit(command: Callable[[], Any]) -> NoReturn:
    try:
        command()
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code)
    except KeyboardInterrupt:
        status = 130
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    finish(status)


def finish(status: int) -> NoReturn:
    """Python's shutdown up to (not including) the native modules' teardown, then exit."""
    try:
        shutdown = getattr(threading, "_shutdown", None)  # joins non-daemon threads, runs their hooks
        if shutdown is not None:
            shutdown()
        else:
            for t in threading.enumerate():
                if t is not threading.main_thread() and not t.daemon:
                    t.join()
        atexit._run_exitfuncs()
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = status or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
