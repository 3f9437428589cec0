"""What a person sees in a terminal: `rlgw demo` in a real tmux pane (160×50), and the same run
without a terminal. The demo's simulated users call the gateway through the openai SDK in the
same process (its HTTP client logs a line per request at INFO); the engine is a fake replica
(RLGW_GATEWAY__UPSTREAMS), so no learner runs, and versions are published by hand through the
admin API to make events.

In the pane: the live table is redrawn in place (the pane's whole history holds its title once),
the events are listed under it, no line per request, and the process exits 0 with the summary
last. Without a terminal: one line per event, a summary line, nothing per request.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rlgw.stack import free_port
from tests.fixtures.upstream import FakeServer, start_fake

pytestmark = pytest.mark.integration
TMUX = shutil.which("tmux")
TITLE = "rl-gateway demo —"


@pytest.fixture
def replica() -> Iterator[FakeServer]:
    server = start_fake()
    yield server
    server.stop.set()


def demo_command(tmp_path: Path, port: int, minutes: float) -> list[str]:
    return [sys.executable, "-m", "rlgw.cli", "demo", "--data-dir", str(tmp_path / "demo"),
            "--port", str(port), "--minutes", str(minutes), "--users", "1"]  # fmt: skip


def demo_env(replica: FakeServer) -> dict[str, str]:
    return {**os.environ, "RLGW_GATEWAY__UPSTREAMS": f'["{replica.url}"]', "PYTHONPATH": os.getcwd()}


def publish_versions(root: str, adapter: Path, deadline_s: float = 60) -> None:
    """Once the gateway serves: v1 registered, evaluated and canaried, then promoted by hand (the demo then
    injects a broken copy of its adapter: `adapter` is a real one)."""
    from safetensors.numpy import save_file

    adapter.mkdir()
    save_file(
        {"lora_A.weight": np.zeros((2, 4), dtype=np.float32)}, str(adapter / "adapter_model.safetensors")
    )
    end = time.monotonic() + deadline_s
    while True:
        try:
            r = httpx.post(root + "/admin/versions", json={"version": "v1", "adapter_path": str(adapter)})
            break
        except httpx.TransportError:
            assert time.monotonic() < end, "the demo's gateway never served"
            time.sleep(0.5)
    # the demo has rubrics, so its eval gate evaluates v1 before the canary (docs/versions.md)
    assert r.status_code == 200 and r.json()["status"] in ("evaluating", "canary"), r.text
    while (canary := httpx.get(root + "/admin/versions").json()["canary"]) != "v1":
        assert time.monotonic() < end, f"v1 never reached the canary: {canary}"
        time.sleep(0.5)
    time.sleep(3)
    r = httpx.post(root + "/admin/versions/v1/promote", json={"reason": "promoted by the test"})
    assert r.status_code == 200, r.text


def tmux(*args: str) -> str:
    assert TMUX is not None
    return subprocess.run([TMUX, *args], capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.mark.timeout(240)
def test_the_demo_redraws_one_table_in_place_in_a_terminal(tmp_path: Path, replica: FakeServer) -> None:
    if TMUX is None:
        pytest.skip("needs tmux")
    session, port = f"rlgw-test-{os.getpid()}", free_port()
    done = tmp_path / "exit-status"
    shell = " ".join(demo_command(tmp_path, port, minutes=0.5)) + f"; echo $? > {done}; sleep 120"
    env = demo_env(replica)
    exports = " ".join(f"{k}='{env[k]}'" for k in ("RLGW_GATEWAY__UPSTREAMS", "PYTHONPATH"))
    tmux(
        "new-session", "-d", "-s", session, "-x", "160", "-y", "50", f"cd {os.getcwd()} && {exports} {shell}"
    )
    try:
        publish_versions(f"http://127.0.0.1:{port}", tmp_path / "v1")
        pane = ""
        while not done.exists():
            time.sleep(2)
            pane = tmux("capture-pane", "-p", "-t", session)
            history = tmux("capture-pane", "-p", "-S", "-", "-t", session)  # scrollback as well
            assert history.count(TITLE) <= 1, f"the table was printed again, not redrawn:\n{history}"
            assert "HTTP Request" not in history, history
        history = tmux("capture-pane", "-p", "-S", "-", "-t", session)
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], check=False, timeout=30)
    assert done.read_text().strip() == "0", history
    print(history)
    assert history.count(TITLE) == 1
    # the view lists the newest events only (rlgw/live_view.py): v1's registration has scrolled
    # out by the end behind the gate's and the broken version's events; the broken one's has not
    for version, event in (
        ("v1", "eval_passed"),
        ("v1", "canary"),
        ("v1", "promoted"),
        ("broken", "registered"),
    ):
        assert any(event in line and version in line for line in history.splitlines()), (event, history)
    assert "promoted by the test" in history
    assert "HTTP Request" not in history and "nanobind" not in history
    assert "log file" in history and "rl-gateway is ready" in history
    lines = [line for line in history.splitlines() if line.strip()]
    assert len(lines) < 80, f"{len(lines)} lines: the screen scrolled\n{history}"
    assert lines[-1].strip() == "}"  # the summary JSON is the last thing printed
    assert pane  # the pane was read while it ran


@pytest.mark.timeout(240)
def test_without_a_terminal_one_line_per_event(tmp_path: Path, replica: FakeServer) -> None:
    port = free_port()
    proc = subprocess.Popen(
        demo_command(tmp_path, port, minutes=0.4),
        env=demo_env(replica),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        publish_versions(f"http://127.0.0.1:{port}", tmp_path / "v1")
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = err.splitlines()
    print(err)
    v1 = [line.split()[2] for line in lines if len(line.split()) > 2 and line.split()[1] == "v1"]
    assert [e for e in v1 if e in ("registered", "canary", "promoted")] == [
        "registered",
        "canary",
        "promoted",
    ]
    assert len(v1) == len(set(v1)), f"an event was printed twice: {v1}"
    assert any(" summary " in line and "serving v1" in line for line in lines), err
    assert "HTTP Request" not in err and "HTTP Request" not in out
    assert "ERROR" not in err and "Traceback" not in err, err  # log records at ERROR would show here
    assert len(lines) < 40, f"{len(lines)} lines on stderr"
    assert '"serving": "v1"' in out
    log_file = tmp_path / "demo" / "rlgw.log"
    assert log_file.is_file() and str(log_file) in err


@pytest.mark.timeout(180)
def test_up_without_a_terminal_says_where_things_are_and_stops_on_sigterm(
    tmp_path: Path, replica: FakeServer
) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "rlgw.cli", "up", "--upstream", replica.url, "--port", str(port),
           "--data-dir", str(tmp_path / "up")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        publish_versions(f"http://127.0.0.1:{port}", tmp_path / "v1")
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    print(err)
    assert proc.returncode == 0, err[-3000:]
    for where in (f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/dashboard", "rlgw.log"):
        assert where in err
    v1 = [line.split()[2] for line in err.splitlines() if len(line.split()) > 2 and line.split()[1] == "v1"]
    assert v1[:2] == ["registered", "canary"] and "promoted" in v1, err
    lines = err.splitlines()
    assert lines[-1] == "stopping …" and " summary " in lines[-2], err
    assert "learner: off" in lines[-2]  # an upstream and no --model: nothing to train
