"""Rubric semantics: weights, metrics, sync/async, errors, timeouts, versions, matching."""

from __future__ import annotations

import asyncio
import time

import pytest

from ledger.records import Episode, Feedback, Turn, TurnChoice
from rewards import EpisodeView, Rubric, metric, reward


def episode(
    answer: str = "Paris", *, task: str | None = "geo", eid: str = "e1", **turn_kw: object
) -> Episode:
    turn = Turn(
        episode_id=eid,
        model="m",
        version="v7",
        task=task,
        request={
            "messages": [
                {"role": "system", "content": "You answer geography."},
                {"role": "user", "content": "capital of France?"},
            ]
        },
        choices=[TurnChoice(message={"role": "assistant", "content": answer})],
        **turn_kw,  # type: ignore[arg-type]
    )
    return Episode(episode_id=eid, turns=[turn])


@reward(weight=2.0)
def says_paris(ep: EpisodeView) -> float:
    return float("paris" in ep.final_answer.lower())


@reward(weight=0.5)
async def short(ep: EpisodeView) -> float:
    await asyncio.sleep(0)
    return float(len(ep.final_answer) < 10)


@metric
def answer_chars(ep: EpisodeView) -> float:
    return len(ep.final_answer)


async def test_weighted_total_counts_rewards_not_metrics() -> None:
    geo = Rubric("geo", [says_paris, short, answer_chars], match={"task": "geo"})
    s = await geo.score(episode("Paris"))
    assert s.values == {"says_paris": 1.0, "short": 1.0, "answer_chars": 5.0}
    assert s.weights == {"says_paris": 2.0, "short": 0.5, "answer_chars": 0.0}
    assert s.total == 2.5
    assert (s.rubric, s.rubric_version, s.version, s.task, s.errors) == ("geo", geo.version, "v7", "geo", {})


async def test_the_issue_example_runs() -> None:
    @reward(weight=1.0)
    def says_paris(episode) -> float:  # type: ignore[no-untyped-def]
        return float("paris" in episode.final_answer.lower())

    @metric
    def answer_chars(episode) -> float:  # type: ignore[no-untyped-def]
        return len(episode.final_answer)

    geo = Rubric("geo", [says_paris, answer_chars], match={"task": "geo"})
    s = await geo.score(episode("It is Paris."))
    assert s.total == 1.0 and s.values["answer_chars"] == 12.0


async def test_a_raising_function_is_an_error_not_a_crash() -> None:
    @reward
    def boom(ep: EpisodeView) -> float:
        raise KeyError("reference")

    @reward
    def nan(ep: EpisodeView) -> float:
        return float("nan")

    s = await Rubric("r", [boom, nan, says_paris]).score(episode())
    assert s.values["boom"] is None and s.errors["boom"].startswith("KeyError")
    assert "not a finite number" in s.errors["nan"]
    assert s.total == 2.0  # the functions that worked


async def test_total_is_none_when_every_reward_fails() -> None:
    @reward
    def boom(ep: EpisodeView) -> float:
        raise RuntimeError("x")

    s = await Rubric("r", [boom, answer_chars]).score(episode())
    assert s.total is None and s.values["answer_chars"] == 5.0


async def test_timeouts_sync_and_async_are_recorded() -> None:
    @reward(timeout_s=0.05)
    async def slow_async(ep: EpisodeView) -> float:
        await asyncio.sleep(5)
        return 1.0

    @reward(timeout_s=0.05)
    def slow_sync(ep: EpisodeView) -> float:
        time.sleep(0.3)
        return 1.0

    s = await Rubric("r", [slow_async, slow_sync, says_paris]).score(episode())
    assert s.errors["slow_async"].startswith("timeout")
    assert s.errors["slow_sync"].startswith("timeout")
    assert s.total == 2.0


async def test_none_abstains_without_error() -> None:
    @reward
    def abstain(ep: EpisodeView) -> None:
        return None

    s = await Rubric("r", [abstain, says_paris]).score(episode())
    assert s.values["abstain"] is None and s.errors == {} and s.total == 2.0


def test_version_follows_source_weights_and_can_be_given() -> None:
    a = Rubric("geo", [says_paris, short])
    assert a.version == Rubric("geo", [says_paris, short]).version
    b = a.with_weights({"short": 3.0})
    assert b.weights["short"] == 3.0 and b.version != a.version
    assert Rubric("geo", [says_paris], version="v1").with_weights({"says_paris": 9}).version == "v1"
    with pytest.raises(ValueError, match="unknown functions"):
        a.with_weights({"nope": 1.0})
    with pytest.raises(ValueError, match="repeat"):
        Rubric("geo", [says_paris, says_paris])


def test_match_on_tenant_model_task_and_system_prompt() -> None:
    ep = episode()
    assert Rubric("r", [says_paris], match={"task": ["geo", "x"], "model": "m"}).matches(ep)
    assert Rubric("r", [says_paris], match={"system": "(?i)GEOGRAPHY"}).matches(ep)
    assert not Rubric("r", [says_paris], match={"tenant": "acme"}).matches(ep)
    assert not Rubric("r", [says_paris], match={"task": "math"}).matches(ep)
    with pytest.raises(ValueError, match="unknown match keys"):
        Rubric("r", [says_paris], match={"tennant": "acme"})


async def test_score_ids_are_deterministic_and_follow_feedback() -> None:
    geo = Rubric("geo", [says_paris])
    ep = episode()
    first, again = await geo.score(ep), await geo.score(ep)
    assert first.id == again.id and first.feedback_seq == 0
    ep.feedback.append(Feedback(episode_id="e1", name="thumbs", value=False))
    later = await geo.score(ep)
    assert later.feedback_seq == 1 and later.id != first.id


def test_view_reads_tool_calls_results_and_metadata() -> None:
    turn = Turn(
        episode_id="e",
        model="m",
        version="v",
        metadata={"reference": "42"},
        request={
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "sum?"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "function": {"name": "add", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ]
        },
        choices=[TurnChoice(message={"role": "assistant", "content": "42"})],
    )
    view = EpisodeView.of(Episode(episode_id="e", turns=[turn]))
    assert view.final_answer == "42" and view.user_messages == ["sum?"]
    assert [c.name for c in view.tool_calls] == ["add"]
    assert view.tool_results[0].content == "42" and view.metadata == {"reference": "42"}
