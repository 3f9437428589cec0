"""The store's reads on the real engine (chdb) and on the in-package fake, side by side."""

from typing import Any

import pytest

from ledger.memstore import MemoryStore
from ledger.records import EpisodeEnd, Feedback, ModelVersion, Score, Turn, TurnChoice


@pytest.fixture(params=["chdb", "memory"])
def any_store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("store") if request.param == "chdb" else MemoryStore()


def turn(ep: str, t: float, tenant: str = "a", version: str = "v1", **kw: Any) -> Turn:
    return Turn(
        episode_id=ep,
        tenant=tenant,
        model="m",
        version=version,
        created_at=t,
        latency_ms=10.0 * t,
        request={"messages": [{"role": "user", "content": f"q {ep}"}]},
        choices=[TurnChoice(message={"role": "assistant", "content": f"a {ep}"})],
        **kw,
    )


def test_episode_gathers_turns_feedback_scores_and_never_doubles(any_store: Any) -> None:
    recs = [
        turn("e1", 2.0),
        turn("e1", 1.0),
        Feedback(episode_id="e1", tenant="a", name="thumbs", value=True, created_at=3.0),
        Score(episode_id="e1", tenant="a", rubric="r", rubric_version="1", total=0.7, version="v1"),
        EpisodeEnd(episode_id="e1", tenant="a", created_at=4.0),
        turn("e2", 1.5, tenant="b"),
    ]
    any_store.write(recs)
    any_store.write(recs[:3])  # a replayed batch
    ep = any_store.episode("e1")
    assert ep is not None
    assert [t.created_at for t in ep.turns] == [1.0, 2.0]
    assert len(ep.feedback) == 1 and len(ep.scores) == 1 and ep.ended
    assert ep.current_scores["r"].total == 0.7
    assert any_store.counts()["turns"] == 4  # 3 turns + 1 episode end
    assert any_store.episode("missing") is None


def test_tenants_never_read_each_other(any_store: Any) -> None:
    any_store.write([turn("e1", 1.0, tenant="a"), turn("e2", 2.0, tenant="b")])
    assert any_store.episode("e1", tenant="a") is not None
    assert any_store.episode("e1", tenant="b") is None
    assert [e.episode_id for e in any_store.episodes(tenant="b")] == ["e2"]
    assert [e.episode_id for e in any_store.episodes()] == ["e2", "e1"]  # newest first
    assert [e.episode_id for e in any_store.episodes(since=1.5)] == ["e2"]


def test_tenants_sharing_an_episode_id_never_merge(any_store: Any) -> None:
    """Episode ids are chosen by clients: two tenants may use one, and reads keep them apart."""
    a, b = turn("e1", 1.0, tenant="a"), turn("e1", 2.0, tenant="b")
    fb = Feedback(episode_id="e1", tenant="b", name="thumbs", value=False, created_at=2.5)
    scores = [
        Score(episode_id="e1", tenant=t, rubric="r", rubric_version="1", total=x, version="v1")
        for t, x in (("a", 1.0), ("b", 0.0))
    ]
    any_store.write([a, b, fb, *scores])
    ep_a, ep_b = any_store.episode("e1", tenant="a"), any_store.episode("e1", tenant="b")
    assert [t.id for t in ep_a.turns] == [a.id] and ep_a.feedback == [] and ep_a.tenant == "a"
    assert [t.id for t in ep_b.turns] == [b.id] and len(ep_b.feedback) == 1
    assert [t.id for t in any_store.episode("e1").turns] == [a.id]  # unscoped: the first user
    assert sorted((e.tenant, len(e.turns)) for e in any_store.episodes()) == [("a", 1), ("b", 1)]
    scored = {s.score.tenant: s.episode for s in any_store.scored(settle_s=0)}
    assert [t.id for t in scored["a"].turns] == [a.id] and scored["a"].feedback == []
    assert [t.id for t in scored["b"].turns] == [b.id]


def test_scored_reads_resume_from_a_position_and_filter(any_store: Any) -> None:
    turns = [turn(f"e{i}", float(i), version="v1" if i % 2 else "v2") for i in range(6)]
    scores = [
        Score(
            episode_id=f"e{i}",
            tenant="a",
            rubric="r" if i < 4 else "s",
            rubric_version="1",
            total=i / 10,
            version=t.version,
        )
        for i, t in enumerate(turns)
    ]
    any_store.write(turns + scores)
    first = any_store.scored(limit=3, settle_s=0)
    assert [s.episode.episode_id for s in first] == ["e0", "e1", "e2"]
    assert first[0].episode.turns[0].id == turns[0].id
    rest = any_store.scored(after=first[-1].position, settle_s=0)
    assert [s.episode.episode_id for s in rest] == ["e3", "e4", "e5"]
    assert [s.score.episode_id for s in any_store.scored(rubric="s", settle_s=0)] == ["e4", "e5"]
    assert [s.score.episode_id for s in any_store.scored(version="v1", settle_s=0)] == ["e1", "e3", "e5"]
    assert any_store.scored(tenant="other", settle_s=0) == []


def test_scored_positions_follow_arrival_not_score_ids(any_store: Any) -> None:
    """Score ids are deterministic (uuid5), so a later score may sort before an earlier one."""
    seen: list[str] = []
    position = None
    for i, sid in enumerate(["ffff", "aaaa", "cccc"]):  # arrival order is not id order
        any_store.write(
            [
                turn(f"e{i}", float(i)),
                Score(id=sid, episode_id=f"e{i}", tenant="a", rubric="r", rubric_version="1", total=1.0),
            ]
        )
        got = any_store.scored(after=position, settle_s=0)
        seen += [s.score.id for s in got]
        position = got[-1].position if got else position
    assert seen == ["ffff", "aaaa", "cccc"]


def test_version_metrics_per_window(any_store: Any) -> None:
    any_store.write(
        [turn("e1", 0.0 + 60 * k, version="v1") for k in range(2)]
        + [turn("e2", 1.0, version="v2", status=500, error="boom")]
        + [
            Score(
                episode_id="e1",
                tenant="a",
                rubric="r",
                rubric_version="1",
                total=1.0,
                version="v1",
                created_at=5.0,
            )
        ]
    )
    got = {(w.version, w.start): w for w in any_store.version_metrics(window_s=60)}
    assert set(got) == {("v1", 0.0), ("v1", 60.0), ("v2", 0.0)}
    assert got[("v1", 0.0)].reward_mean == 1.0 and got[("v1", 0.0)].turns == 1
    assert got[("v2", 0.0)].errors == 1
    assert [w.version for w in any_store.version_metrics(versions=["v2"])] == ["v2"]


def test_version_events(any_store: Any) -> None:
    any_store.write(
        [
            ModelVersion(version="v2", parent="v1", status="registered", event="registered", created_at=1.0),
            ModelVersion(version="v2", status="canary", event="canary", created_at=2.0),
        ]
    )
    assert [e.status for e in any_store.version_events("v2")] == ["registered", "canary"]


def test_migrations_are_forward_only_and_run_once(store: Any) -> None:
    assert store.migrate() == []
    rows = store._query(f"SELECT number FROM {store.db}.schema_migrations ORDER BY number")
    from ledger.migrations import MIGRATIONS

    assert [r[0] for r in rows] == [number for number, _, _ in MIGRATIONS]
    store.write([turn("e1", 30.0)])
    minute = store._query(f"SELECT version, turns FROM {store.db}.version_minute")
    assert minute == [("v1", 1)]


def test_a_second_embedded_path_is_refused(store: Any, tmp_path: Any) -> None:
    from ledger.store import ClickHouseStore, StoreError

    with pytest.raises(StoreError, match="allows one"):
        ClickHouseStore(f"chdb://{tmp_path}")


def test_a_score_that_arrives_before_its_turns_waits_for_them(any_store: Any) -> None:
    """The store writer may insert a score before its episode's turns (another batch): a
    resuming read stops at it rather than move past it; only after the grace is it skipped."""
    early = Score(episode_id="late", tenant="a", rubric="r", rubric_version="1", total=1.0)
    t1 = turn("e1", 1.0)
    after_it = Score(episode_id="e1", tenant="a", rubric="r", rubric_version="1", total=0.5)
    any_store.write([early, t1, after_it])
    assert any_store.scored(settle_s=0) == []  # nothing past the waiting score
    assert [s.score.id for s in any_store.scored(settle_s=0, turns_grace_s=0)] == [after_it.id]
    any_store.write([turn("late", 2.0)])
    got = any_store.scored(settle_s=0)
    assert [s.score.id for s in got] == [early.id, after_it.id]
    assert [t.episode_id for t in got[0].episode.turns] == ["late"]
