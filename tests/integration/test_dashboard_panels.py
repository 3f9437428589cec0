"""Every panel of the dashboard has values, in a real headless Chromium: the ledger cards, the
reward and traffic charts, versions, decisions (a replica-keyed figure such as `load_ms` as
text), the rubric breakdown (from a store), the learner per version and per step (figures the
learner publishes with each version, ledger/training.py), alarms and eval-gate results. No
"[object Object]", "NaN" or "undefined" anywhere; the reward axis keeps to [0, 1] although a
canary of few episodes has an interval past both ends. The screenshot is kept as a CI artifact
(tests/fixtures/browser.py says where)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth import KeyStore
from learner.train import StepStats
from ledger.memstore import MemoryStore
from ledger.records import JudgeProbe, ModelVersion, Score, Turn
from ledger.training import TRAINING_KEY, training_window
from tests.fixtures.browser import keep_screenshot
from tests.fixtures.upstream import FakeServer, GatewayServer, gateway_settings, start_gateway, stop_gateway

pytestmark = pytest.mark.integration
PANELS = ("#versions", "#decisions", "#rubric", "#learner-versions", "#learner-steps", "#alarms", "#evals")
BAD = ("[object Object]", "NaN", "undefined")
V2_SUMMARY = {"steps": 2, "samples": 16, "tokens": 810, "entropy": 2.151, "kl_base": 0.0045,
              "ratio_mean": 0.97, "ratio_min": 0.41, "ratio_max": 1.8, "clipped_frac": 0.02,
              "tokens_per_s": 253.1, "skipped": {"stale": 1, "unknown_version": 2}}  # fmt: skip
HELD = {"version": "v2-held", "reason": "kl_base 0.410 > max_kl_base 0.3", "training": {"kl_base": 0.41}}


def steps(first: int) -> list[StepStats]:
    skipped = [Counter(stale=i, unknown_version=1) for i in range(2)]
    return [
        StepStats(
            step=first + i,
            samples=8,
            tokens=400 + 10 * i,
            loss=0.1,
            reward_mean=0.4,
            entropy=2.1 + 0.1 * i,
            ratio_mean=0.97,
            ratio_max=1.8,
            clipped_frac=0.02,
            kl_base=0.003 * (i + 1),
            seconds=1.6,
            skipped=skipped[i],
        )
        for i in range(2)
    ]


@pytest.fixture
def busy_gateway(tmp_path: Path, fake_upstream: FakeServer) -> Iterator[tuple[GatewayServer, str]]:
    settings = gateway_settings(tmp_path, [fake_upstream.url])
    admin_key = KeyStore(settings.keys_path).create("ops", admin=True)
    now, store = time.time(), MemoryStore()
    records: list[Any] = []
    for i in range(12):  # scored traffic in the store: the rubric panel and the store lag
        at = now - 200 + i
        records.append(Turn(episode_id=f"s{i}", model="rlgw", version="base", latency_ms=9.0, created_at=at))
        values: dict[str, float | None] = {"names_a_colour": float(i % 2), "answer_words": 3.0}
        weights = {"names_a_colour": 1.0, "answer_words": 0.0}
        score = Score(episode_id=f"s{i}", rubric="colours", rubric_version="1", total=float(i % 2),
                      values=values, weights=weights, version="base", created_at=at)  # fmt: skip
        records.append(score)
    store.write(records)
    gw = start_gateway(settings, store=store)
    auth = {"Authorization": f"Bearer {admin_key}"}
    windows = {  # v1: figures made from today's StepStats; v2: the learner's own summary, newer names
        "v1": {"episodes": 64, TRAINING_KEY: training_window(steps(1))},
        "v2": {"episodes": 64, "held_back": [HELD], TRAINING_KEY: training_window(steps(3), V2_SUMMARY)},
    }
    for vid, window in windows.items():
        body = {"version": vid, "adapter_path": f"/tmp/{vid}", "data_window": window}
        r = httpx.post(gw.root + "/admin/versions", json=body, headers=auth)
        assert r.status_code == 200, r.text
        if vid == "v1":
            r = httpx.post(gw.root + "/admin/versions/v1/promote", json={"reason": "test"}, headers=auth)
            assert r.status_code == 200, r.text
    reg = gw.services.versions
    assert reg.canary == "v2"
    for i in range(40):
        at = now - 280 + 7 * i
        reg.stats.rewards["v1"][f"a{i}"] = (at, 0.6 + 0.1 * (i % 4))
        reg.stats.add_request("v1", True, 20.0 + i % 5, at)
    for i in range(3):  # three canary episodes: an interval far past [0, 1]
        reg.stats.rewards["v2"][f"c{i}"] = (now - 20, float(i % 2))
        reg.stats.add_request("v2", i != 2, 30.0, now - 20)
    for event, reason, figures in (  # as a following gateway takes them from the versions topic
        ("alarm_kl", "KL to the base 0.41 over its limit 0.3", {"kl": 0.41, "limit": 0.3}),
        ("eval_passed", "held-out reward 0.62 vs parent 0.58", {"reward": 0.62, "parent": 0.58}),
    ):
        reg.apply(ModelVersion(version="v2", status="canary", event=event, reason=reason, figures=figures))
    drifted = ["false_positive_rate 0.00 -> 0.44"]  # a judge's scheduled probe run (the scores topic)
    run = JudgeProbe(judge="qa/judge", url="http://judge/v1", model="j", false_positive_rate=0.44,
                     control_pass_rate=1.0, baseline_from="first run", drift=drifted)  # fmt: skip
    reg.judges.observe(run)
    yield gw, admin_key
    stop_gateway(gw)


# One read of the page, in the page (atomic: the page redraws every 2 s, which stales element handles).
READ_PAGE = """
const q = (css) => [...document.querySelectorAll(css)];
const text = (css) => (document.querySelector(css) || {}).innerText || "";
const panels = {};
for (const css of arguments[0]) {
  panels[css] = { rows: q(css + " tbody tr").map((r) => r.innerText),
                  muted: q(css + " tbody td.muted").length,
                  shown: document.querySelector(css).offsetParent !== null };
}
return {
  panels, page: document.body.innerText, cards: q("#ledger .card").map((c) => c.innerText),
  lines: { reward: q("#reward-chart path.line").length, traffic: q("#traffic-chart path.line").length },
  labels: q("#reward-chart text").map((t) => t.textContent),
  bands: q('#reward-chart polygon.band[data-version="v1"]').map((b) => b.getAttribute("points")),
  decisions: text("#decisions tbody"), learner_v2: text('#learner-versions tr[data-version="v2"]'),
  learner_v1: text('#learner-versions tr[data-version="v1"]'),
  steps: q("#learner-steps tbody tr").map((r) => r.innerText), alarms: text("#alarms"), evals: text("#evals"),
};
"""


def test_every_panel_has_values(browser: Any, busy_gateway: tuple[GatewayServer, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gw, admin_key = busy_gateway
    browser.get(f"{gw.root}/dashboard?key={admin_key}")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#learner-steps tbody tr td"))
    time.sleep(1)  # one more refresh: the page is drawn from a settled snapshot
    page = browser.execute_script(READ_PAGE, list(PANELS))

    for css, panel in page["panels"].items():
        assert panel["rows"] and not panel["muted"], f"{css} shows no values: {panel}"
        assert panel["shown"], f"{css} is hidden"
    assert len(page["cards"]) >= 5 and all(c.strip() for c in page["cards"]), page["cards"]
    assert page["lines"]["reward"] >= 2 and page["lines"]["traffic"] >= 2, page["lines"]
    for bad in BAD:
        assert bad not in page["page"], f"{bad!r} on the page:\n{page['page']}"
    assert "load_ms={http://" in page["decisions"]  # the loaded event's figure per replica, as text

    assert "2.151" in page["learner_v2"] and "0.0045" in page["learner_v2"]  # entropy, KL to the base
    assert "0.41 … 1.8" in page["learner_v2"] and "stale 1, unknown_version 2" in page["learner_v2"]
    assert "2.15" in page["learner_v1"]  # entropy, token-weighted over its two steps (made here)
    assert [r.split()[0] for r in page["steps"]] == ["4", "3", "2", "1"]
    assert "KL to the base 0.41" in page["alarms"]
    assert "v2-held" in page["alarms"] and "kl_base 0.410 > max_kl_base 0.3" in page["alarms"]
    assert "held-out reward 0.62" in page["evals"]
    assert "judge:qa/judge" in page["alarms"] and "false_positive_rate 0.00 -> 0.44" in page["alarms"]

    labels = [float(t) for t in page["labels"] if t.replace(".", "", 1).lstrip("-").isdigit()]
    assert labels and min(labels) == 0.0 and max(labels) == 1.0, labels
    assert page["bands"], "v1's interval band is not drawn"
    for points in page["bands"]:  # clipped to the axis: inside the plot (viewBox 640×240, padding 12 / 26)
        ys = [float(p.split(",")[1]) for p in points.split()]
        assert min(ys) >= 12 - 0.01 and max(ys) <= 240 - 26 + 0.01, ys

    keep_screenshot(browser.get_screenshot_as_png(), "dashboard-panels.png")
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
