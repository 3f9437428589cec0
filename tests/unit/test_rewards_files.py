"""Rubric files: TOML built-ins with parameters, Python files, config overrides, signals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.records import Episode, Feedback, Turn, TurnChoice
from rewards import RubricFileError, load_rubrics
from rewards.config import RewardsConfig
from rewards.signals import classify_next_turn

TOML = """
[[rubric]]
name = "support"
match = { tenant = "acme", task = "support" }

[[rubric.scorer]]
use = "contains"
name = "mentions_ref"
reference = "expected"

[[rubric.scorer]]
use = "exact_match"
weight = 0.0

[[rubric.scorer]]
use = "regex"
pattern = "(?i)order #\\\\d+"

[[rubric.scorer]]
use = "json_schema"
weight = 0.0
schema = { type = "object", required = ["answer"] }

[[rubric.scorer]]
use = "valid_json"
weight = 0

[[rubric.scorer]]
use = "tool_call_wellformed"
weight = 0

[[rubric.scorer]]
use = "tool_success"
weight = 0

[[rubric.scorer]]
use = "feedback"
weight = 2.0

[[rubric.scorer]]
use = "implicit_feedback"
weight = 0

[[rubric.scorer]]
use = "length_penalty"
max_chars = 10

[[rubric.scorer]]
use = "latency_penalty"
max_ms = 1000
"""


def support_episode(answer: str, feedback: list[Feedback] = ()) -> Episode:  # type: ignore[assignment]
    turns = [
        Turn(
            episode_id="e",
            tenant="acme",
            model="m",
            version="v",
            task="support",
            latency_ms=1500,
            metadata={"expected": "refund", "reference": answer},
            request={
                "messages": [{"role": "user", "content": "where is my order #12?"}],
                "tools": [{"type": "function", "function": {"name": "lookup"}}],
            },
            choices=[
                TurnChoice(
                    message={
                        "role": "assistant",
                        "content": "checking",
                        "tool_calls": [
                            {"id": "1", "function": {"name": "lookup", "arguments": '{"id": 12}'}}
                        ],
                    }
                )
            ],
        ),
        Turn(
            episode_id="e",
            tenant="acme",
            model="m",
            version="v",
            task="support",
            latency_ms=600,
            request={
                "messages": [
                    {"role": "user", "content": "where is my order #12?"},
                    {"role": "assistant", "content": "It shipped."},
                    {"role": "user", "content": "where is my order #12??"},
                ]
            },
            choices=[TurnChoice(message={"role": "assistant", "content": answer})],
        ),
    ]
    return Episode(episode_id="e", tenant="acme", turns=turns, feedback=list(feedback))


async def test_toml_builtins_score_with_their_parameters(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(TOML)
    (rubric,) = load_rubrics(path)
    fb = [
        Feedback(episode_id="e", name="tool_success", value=True),
        Feedback(episode_id="e", name="thumbs", value="down"),
    ]
    s = await rubric.score(support_episode('{"answer": "refund for order #12"}', fb))
    assert s.errors == {}
    v = s.values
    assert v["mentions_ref"] == 1.0 and v["exact_match"] == 1.0 and v["regex"] == 1.0
    assert v["json_schema"] == 1.0 and v["valid_json"] == 1.0
    assert v["tool_call_wellformed"] is None  # the last request carries no tool call, only the reply text
    assert v["tool_success"] == 1.0 and v["feedback"] == 0.0
    assert v["implicit_feedback"] == 0.0  # the user repeated the question
    assert v["length_penalty"] == -1.0 and v["latency_penalty"] == pytest.approx(-1.0)
    assert s.total == pytest.approx(1.0 + 1.0 + 0.0 - 1.0 - 1.0)


async def test_toml_weights_overridden_by_config(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(TOML)
    (plain,) = load_rubrics(path)
    (heavy,) = load_rubrics(path, RewardsConfig(weights={"support": {"feedback": 5.0}}))
    assert heavy.weights["feedback"] == 5.0 and heavy.version != plain.version


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[rubric]]\nname = "x"\n[[rubric.scorer]]\nuse = "nope"\n', "must be one of"),
        ('[[rubric]]\nname = "x"\n[[rubric.scorer]]\nuse = "contains"\nrefrence = "a"\n', "takes"),
        ('[[rubric]]\nnam = "x"\n', "needs 'name'"),
        ("", "at least one rubric"),
        ('[[rubric]]\nname = "x"\nmatch = { tennant = "a" }\n', "unknown match keys"),
    ],
)
def test_bad_toml_names_the_problem(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(RubricFileError, match=message):
        load_rubrics(path)


async def test_python_rubric_file_loads_every_rubric(tmp_path: Path) -> None:
    path = tmp_path / "geo.py"
    path.write_text(
        "from rewards import Rubric, reward, metric\n\n"
        "@reward(weight=1.0)\n"
        "def says_paris(episode) -> float:\n"
        "    return float('paris' in episode.final_answer.lower())\n\n"
        "@metric\n"
        "def answer_chars(episode) -> float:\n"
        "    return len(episode.final_answer)\n\n"
        "geo = Rubric('geo', [says_paris, answer_chars], match={'task': 'geo'})\n"
        "geo_strict = Rubric('geo-strict', [says_paris])\n"
    )
    rubrics = load_rubrics(path)
    assert [r.name for r in rubrics] == ["geo", "geo-strict"]
    ep = support_episode("Paris")
    assert (await rubrics[1].score(ep)).total == 1.0
    path.write_text(path.read_text().replace("'paris'", "'lyon'"))
    assert load_rubrics(path)[1].version != rubrics[1].version  # the source changed


def test_python_file_that_fails_to_import(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('nope')\n")
    with pytest.raises(RubricFileError, match="import failed"):
        load_rubrics(path)


@pytest.mark.parametrize(
    ("prev", "nxt", "signal"),
    [
        ("capital of France?", "That's wrong.", "wrong"),
        ("capital of France?", "no, that is not it", "wrong"),
        ("what is the capital of France?", "what's the capital of France", "repeat"),
        ("capital of France?", "thanks! and of Spain?", "moves_on"),
    ],
)
def test_next_turn_signals(prev: str, nxt: str, signal: str) -> None:
    assert classify_next_turn(prev, nxt) == signal
