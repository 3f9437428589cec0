"""The records and seams two packages share, defined once in ledger/: episode assembly, the
scored read and its fake, the published version."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ledger.memstore import MemoryStore
from ledger.plain import plain
from ledger.published import BASE_VERSION, PublishedVersion
from ledger.reads import EpisodeAssembly, MemoryScoredEpisodes, ScoredReads, assemble
from ledger.records import Episode, EpisodeEnd, Feedback, Score, Turn
from rewards.source import MemoryEpisodes
from rewards.state import EpisodeBook


def records() -> list[Turn | Feedback | EpisodeEnd | Score]:
    turn = Turn(episode_id="e", model="rlgw", version=BASE_VERSION, tenant="t", prompt_token_ids=[1, 2])
    fb = Feedback(episode_id="e", tenant="t", name="thumbs", value=True, done=True)
    score = Score(episode_id="e", tenant="t", rubric="r", rubric_version="1", total=1.0)
    return [turn, fb, score, turn, fb, score]  # each one twice: a replay


def test_every_side_assembles_an_episode_the_same_way_and_drops_duplicates() -> None:
    recs = records()
    by_store = assemble("e", recs)
    by_source = MemoryEpisodes(recs).episode("e")
    assert by_store is not None and by_source is not None
    for ep in (by_store, by_source):
        assert (len(ep.turns), len(ep.feedback), len(ep.scores), ep.ended, ep.tenant) == (1, 1, 1, True, "t")
    book = EpisodeBook()
    for r in recs:
        book.apply(r, 0.0)
    st = book.get("e", "t")
    assert st is not None and st.closed and (st.turns, st.feedback) == (1, 1)
    st.pack()  # held as bytes, then unpacked: the same episode, its turns slimmed for rubrics
    assert len(st.episode.turns) == 1 and st.episode.turns[0].prompt_token_ids is None
    assert assemble("e", []) is None
    reshaped = EpisodeAssembly("e", turn=lambda t: t.model_copy(update={"task": "x"}))
    assert reshaped.add(recs[0]) and not reshaped.add(recs[0])
    assert [t.task for t in reshaped.episode.turns] == ["x"]


def test_the_memory_fake_and_the_store_answer_the_one_scored_read() -> None:
    fake, store = MemoryScoredEpisodes(), MemoryStore()
    readers: list[ScoredReads] = [fake, store]
    turn, fb, score = records()[:3]
    assert isinstance(turn, Turn) and isinstance(score, Score)
    fake.add(score, Episode(episode_id="e", turns=[turn]))
    store.write([turn, fb, score])
    for reader in readers:
        [item] = reader.scored(None, limit=10)
        assert item.score.id == score.id and item.episode.turns[0].id == turn.id
        assert reader.scored(item.position, limit=10) == []


def test_a_published_version_refuses_misspelt_fields() -> None:
    v = PublishedVersion(version="v1", adapter_path="/a")
    assert PublishedVersion.model_validate(v.model_dump(mode="json")) == v
    with pytest.raises(ValidationError, match="adapter_pth"):
        PublishedVersion.model_validate({"version": "v1", "adapter_path": "/a", "adapter_pth": "/a"})


def test_plain_data_is_the_record_shape_and_refuses_unknown_names() -> None:
    data = plain(Turn, episode_id="e", model="rlgw", version=BASE_VERSION)
    assert set(data) == {f.alias or name for name, f in Turn.model_fields.items()}
    assert Turn.model_validate(data).model_dump(by_alias=True) == data  # defaults are the model's
    assert plain(Turn, episode_id="e", model="m", version="v")["id"] != data["id"]  # a new id each time
    with pytest.raises(TypeError, match="episode_idd"):
        plain(Turn, episode_idd="e", model="rlgw", version=BASE_VERSION)
    with pytest.raises(TypeError, match="version"):
        plain(Turn, episode_id="e", model="rlgw")
