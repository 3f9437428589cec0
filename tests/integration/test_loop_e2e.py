"""The whole loop on real parts: vLLM-CPU, LocalBus, the embedded store, the rubric worker and
the learner in one process, driven by simulated users through the openai SDK (`rlgw demo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.config import Settings
from rlgw.demo import BROKEN, run_demo
from rlgw.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARGIN = 0.3  # a promoted version's live reward must beat the base's by this much


def test_train_canary_promote_and_roll_back_a_broken_version(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "demo", gateway={"port": free_port()})  # type: ignore[arg-type]
    out = tmp_path / "summary.json"
    summary = run_demo(settings, minutes=9, users=8, json_path=out, fresh=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "versions"}, indent=1))
    assert json.loads(out.read_text())["versions"] and out.with_suffix(".png").stat().st_size > 0
    assert summary["promotions"], "no version was promoted"
    base = summary["baseline_reward"]
    promoted = {p["version"] for p in summary["promotions"]}
    best = max(v["reward"] or 0.0 for v in summary["versions"] if v["id"] in promoted)
    assert best >= base + MARGIN, (best, base)
    broken = [r for r in summary["rollbacks"] if r["version"] == BROKEN]
    assert broken and "under its parent" in broken[0]["reason"]
    assert summary["serving"] != BROKEN
