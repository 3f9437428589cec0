"""`rlgw` ends without the native libraries' teardown noise, with the command's own status, and
never hides an error (rlgw/process_exit.py). Each case runs in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import atexit, sys, threading, time

from rlgw.process_exit import run_and_exit
atexit.register(lambda: print("atexit ran", flush=True))
"""


def run(body: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_status_and_the_exit_handlers_are_kept() -> None:
    done = run("""
        def command():
            t = threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished", flush=True)))
            t.start()
            sys.exit(3)  # what a typer app does with typer.Exit(3)
        run_and_exit(command)
    """)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["thread finished", "atexit ran"]  # joined before exit handlers


def test_an_uncaught_error_prints_its_traceback_and_exits_1() -> None:
    done = run("""
        def command():
            raise RuntimeError("the real error")
        run_and_exit(command)
    """)
    assert done.returncode == 1
    assert "RuntimeError: the real error" in done.stderr and "Traceback" in done.stderr
    assert done.stdout == "atexit ran\n"


def test_nanobind_leak_reports_are_not_printed() -> None:
    pytest.importorskip("triton._C.libtriton", reason="needs triton (a nanobind extension)")
    # a triton object still referenced by a daemon thread at exit: what the learner's thread does
    leaky = """
        import triton._C.libtriton as lt
        def hold():
            ctx = lt.ir.context()
            time.sleep(600)
        threading.Thread(target=hold, daemon=True).start()
        time.sleep(0.3)
    """
    plain = run(leaky)
    assert "nanobind: leaked" in plain.stderr  # the noise this module exists for
    quiet = run(f"def command():\n{textwrap.indent(textwrap.dedent(leaky), '    ')}\nrun_and_exit(command)")
    assert quiet.returncode == 0 and "nanobind" not in quiet.stderr, quiet.stderr[-2000:]
    assert quiet.stdout == "atexit ran\n"
