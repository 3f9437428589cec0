"""Drill: SIGKILL the gateway right after a reply with `ledger.ack = "durable"`: every turn a
client read is in the ledger after a restart (benchmarks/crash_drill.py, one trial, run as a
script so the figures printed are the drill's own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_durable_acks_lose_nothing_when_killed_0_ms_after_a_reply(tmp_path: Path) -> None:
    out = tmp_path / "drill.json"
    cmd = [
        sys.executable,
        "benchmarks/crash_drill.py",
        "--modes",
        "durable",
        "--delays",
        "0",
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = json.loads(out.read_text())
    assert row["acknowledged"] > 0 and row["lost"] == 0 and row["recorded"] == row["acknowledged"]
    assert row["exit_after_sigterm"] == 0
