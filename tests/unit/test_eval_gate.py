"""The eval gate in the version lifecycle (gateway/eval_versions.py, gateway/eval_routes.py,
rewards/eval_worker.py) on the fake upstream: a version whose answers fail the rubric is
stopped before any live traffic, its reason recorded and kept across a restart; a good one
goes on to its canary; evaluation requests are neither recorded nor counted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from gateway.errors import NoReplica
from gateway.eval_admission import EvalAdmission
from gateway.version_state import VersionBook
from ledger.holdout import held_out
from ledger.memstore import MemoryStore
from ledger.records import ModelVersion, parse_record
from rewards.eval_client import GatewayEvalClient
from rewards.eval_worker import EvalWorker
from rewards.evaluation import EvalSettings
from rewards.rubric import Rubric, reward
from rewards.view import EpisodeView
from tests.fixtures.drills import wait_for
from tests.fixtures.upstream import (
    GatewayServer,
    gateway_settings,
    recorded_turns,
    start_fake,
    start_gateway,
    stop_gateway,
)


@reward(inline=True)
def not_from_bad(ep: EpisodeView) -> float:
    return 0.0 if "rlgw-bad" in ep.final_answer else 1.0  # the fake answers with the adapter's name


RUBRIC = Rubric("sane", [not_from_bad])
HELD = [e for e in (f"ep{i}" for i in range(300)) if held_out(e, 0.1)][:6]


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[GatewayServer, MemoryStore]]:
    fake = start_fake()
    settings = gateway_settings(tmp_path, [fake.url])
    settings.versions.eval_gate = True
    store = MemoryStore()
    gw = start_gateway(settings, store=store)
    yield gw, store
    stop_gateway(gw)
    fake.stop.set()


def chat(gw: GatewayServer, episode: str) -> httpx.Response:
    body = {"model": "rlgw", "messages": [{"role": "user", "content": f"q {episode}"}], "max_tokens": 64}
    resp = httpx.post(gw.url + "/chat/completions", json=body, headers={"X-Episode-Id": episode}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp


def register(gw: GatewayServer, vid: str, parent: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"version": vid, "adapter_path": f"/tmp/{vid}", "parent": parent}
    return httpx.post(gw.root + "/admin/versions", json=body, timeout=10)


def listing(gw: GatewayServer) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(gw.root + "/admin/versions", timeout=10).json()
    return out


async def test_only_the_newest_of_a_line_is_evaluated_and_its_pass_skips_the_older(gated) -> None:  # type: ignore[no-untyped-def]
    gw, store = gated
    for e in HELD:
        chat(gw, e)
    store.write(recorded_turns(gw, want=len(HELD)))
    worker = EvalWorker(GatewayEvalClient(gw.root), [RUBRIC], EvalSettings(n=8, max_tokens=32))
    # a learner's line published faster than it is evaluated, and a version of another line
    for vid, parent in [("a1", None), ("a2", "a1"), ("a3", "a2"), ("other", "base")]:
        assert register(gw, vid, parent=parent).json()["status"] == "evaluating"

    reports = await worker.evaluate_pending()
    assert sorted(r.version for r in reports) == ["a3", "other"]  # one evaluation per line
    rows = {v["id"]: v for v in listing(gw)["versions"]}
    assert [rows[v]["status"] for v in ("a1", "a2")] == ["retired", "retired"]
    assert {e.event for e in gw.services.versions.events if e.version in ("a1", "a2")} >= {"skipped"}
    assert not await worker.evaluate_pending()  # nothing is left waiting


async def test_a_failing_version_never_gets_live_traffic_and_a_good_one_is_canaried(gated) -> None:  # type: ignore[no-untyped-def]
    gw, store = gated
    for e in [*HELD, "live-1", "live-2"]:
        chat(gw, e)
    store.write(recorded_turns(gw, want=len(HELD) + 2))
    turns = len(gw.bus.messages("turns"))
    worker = EvalWorker(GatewayEvalClient(gw.root), [RUBRIC], EvalSettings(n=8, max_tokens=32))

    assert register(gw, "good").json()["status"] == "evaluating"
    assert listing(gw)["canary"] is None  # no live traffic before its evaluation
    assert chat(gw, "live-3").headers["x-model-version"] == "base"
    (report,) = await worker.evaluate_pending()
    assert report.verdict == "pass" and report.prompts == len(HELD)
    assert listing(gw)["canary"] == "good"

    assert register(gw, "bad", parent="base").json()["status"] == "evaluating"
    (report,) = await worker.evaluate_pending()
    assert report.verdict == "worse" and report.reward("sane").version == 0.0  # type: ignore[union-attr]
    rows = {v["id"]: v for v in listing(gw)["versions"]}
    assert rows["bad"]["status"] == "eval_failed" and "held-out reward 0.000" in rows["bad"]["eval"]["reason"]
    assert rows["good"]["status"] == "canary" and rows["good"]["eval"]["verdict"] == "pass"
    for i in range(30):  # the canary takes its share; the failed version none
        assert chat(gw, f"after-{i}").headers["x-model-version"] in ("base", "good")
    assert gw.services.versions.stats.arm("bad", 0.0).requests == 0
    # the 2 x 2 x 6 evaluation answers were not recorded: only the 31 live turns since
    assert len(recorded_turns(gw, want=turns + 31)) == turns + 31
    # a version descending from the failed one is refused, as under a rolled-back one
    child = register(gw, "child", parent="bad")
    assert child.status_code == 400 and child.json()["error"]["code"] == "parent_rolled_back"

    # the verdicts are version events: a restarted gateway rebuilds them from the topic
    def events_of_bad() -> list[ModelVersion]:
        gw.services.recorder.flush(5)
        msgs = gw.bus.messages("versions")
        return [
            r for m in msgs if isinstance(r := parse_record(m.value), ModelVersion) and r.version == "bad"
        ]

    wait_for(lambda: any(e.event == "unloaded" for e in events_of_bad()), "the failed version's unload", 10)
    events = [r for m in gw.bus.messages("versions") if isinstance(r := parse_record(m.value), ModelVersion)]
    assert [e.event for e in events if e.version == "bad"] == [
        "registered",
        "loaded",
        "evaluating",
        "eval_failed",
        "unloaded",  # out of the replicas at the next tick: it is never served
    ]
    book = VersionBook(gw.services.settings.versions, gw.services.recorder, lambda: "fake-base")
    book.restore(events)
    assert book.versions["bad"].status == "eval_failed" and book.versions["bad"].eval["verdict"] == "worse"  # type: ignore[index]
    assert book.canary == "good"


def test_eval_requests_are_checked_and_a_verdict_needs_an_evaluating_version(gated) -> None:  # type: ignore[no-untyped-def]
    gw, _ = gated
    post = lambda path, body: httpx.post(gw.root + path, json=body, timeout=10)  # noqa: E731
    no_version = post("/admin/eval/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    assert no_version.status_code == 400 and no_version.json()["error"]["param"] == "version"
    unknown = post("/admin/eval/chat/completions", {"version": "nope", "messages": []})
    assert unknown.status_code == 404
    ok = post(
        "/admin/eval/chat/completions", {"version": "base", "messages": [{"role": "user", "content": "x"}]}
    )
    assert ok.status_code == 200 and ok.headers["x-model-version"] == "base", ok.text
    assert post("/admin/versions/base/eval", {"passed": True}).json()["error"]["code"] == "not_evaluating"
    assert httpx.get(gw.root + "/admin/eval/prompts?n=0", timeout=10).status_code == 400


async def test_admission_waits_for_spare_capacity_and_gives_up_after_its_wait() -> None:
    replica = SimpleNamespace(url="r", healthy=True, outstanding=0)
    pool: Any = SimpleNamespace(replicas=[replica], healthy=lambda: [replica], live_arrived=[])
    gate = EvalAdmission(pool, concurrency=1, live_limit=2, wait_s=5.0)
    replica.outstanding = 2  # two live requests in flight: no spare capacity
    assert not gate.spare()
    entered = asyncio.Event()

    async def send(targets: Any, placed: Any) -> str:
        replica.outstanding += 1  # the pool counts it
        placed(replica)
        entered.set()
        await asyncio.sleep(0.05)
        replica.outstanding -= 1
        return "answer"

    task = asyncio.create_task(gate.run(None, send))
    await asyncio.sleep(0.05)
    assert not entered.is_set()
    replica.outstanding = 1  # a live request finished
    await asyncio.wait_for(entered.wait(), 2)
    assert gate.running == 1 and gate.live() == 1 and not gate.spare()  # concurrency 1 is taken
    assert await task == "answer"
    impatient = EvalAdmission(pool, concurrency=1, live_limit=1, wait_s=0.05)
    with pytest.raises(NoReplica):
        await impatient.run(None, send)


RUBRIC_FILE = """
from rewards import Rubric, reward

@reward(inline=True)
def not_from_bad(ep):
    return 0.0 if "rlgw-bad" in ep.final_answer else 1.0

SANE = Rubric("sane", [not_from_bad])
"""


def test_rlgw_eval_prints_the_table_and_exits_1_on_worse(gated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from rlgw.cli import app

    gw, _ = gated
    (tmp_path / "sane.py").write_text(RUBRIC_FILE)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"messages": [{{"role": "user", "content": "t{i}"}}]}}\n' for i in range(4)))
    assert register(gw, "bad").json()["status"] == "evaluating"
    args = ["eval", "--version", "bad", "--url", gw.root, "--rubrics", str(tmp_path / "sane.py")]
    args += ["--dataset", str(tasks), "--n", "0", "--config", str(tmp_path / "none.toml")]
    (tmp_path / "none.toml").write_text("")
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1, out.output
    assert "bad against base" in out.output and "WORSE" in out.output and "verdict: worse" in out.output
    ok = CliRunner().invoke(app, [*args[:2], "base", *args[3:]])  # base against base: no difference
    assert ok.exit_code == 0 and "verdict: pass" in ok.output, ok.output
    # a by-hand evaluation records nothing: the gate's verdict is the evaluator's
    assert {v["id"]: v["status"] for v in listing(gw)["versions"]}["bad"] == "evaluating"


def test_the_learner_treats_an_eval_failed_parent_as_off_the_fleet() -> None:
    from learner.follow import Fleet

    fleet = Fleet.from_listing(
        {
            "serving": "base",
            "canary": None,
            "versions": [
                {"id": "v1", "parent": "base", "status": "eval_failed"},
                {"id": "v2", "parent": "v1", "status": "evaluating"},
            ],
        }
    )
    assert fleet.rolled_back == {"v1"} and "v2" in fleet.held


def test_the_dashboard_shows_an_eval_report_in_brief() -> None:
    from gateway.dashboard_data import eval_figures

    row = {
        "rubric": "sane",
        "metric": "reward",
        "n": 6,
        "parent": 1.0,
        "version": 0.0,
        "low": -1.0,
        "high": -1.0,
    }
    brief = eval_figures(
        {"verdict": "worse", "prompts": 6, "seconds": 1.5, "rows": [row, {**row, "metric": "f"}]}
    )
    assert brief == {
        "verdict": "worse",
        "prompts": 6,
        "seconds": 1.5,
        "sane": "1.000 → 0.000 [-1.000, -1.000] n=6",
    }
    assert eval_figures({"reward": 0.6}) == {"reward": 0.6}  # figures of another shape stay as they are
