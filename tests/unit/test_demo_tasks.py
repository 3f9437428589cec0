"""The real-model demo's task mix (rlgw/demo_tasks.py) and the learning benchmark's report writer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ledger.records import Episode, Turn, TurnChoice
from rewards.loader import load_rubrics
from rlgw import demo_tasks
from rlgw.demo_tasks import TASK_RUBRICS, TASKS, arith_ok, format_ok, prompts, short_ok

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from learning_report import plot, table


def episode(task: str, question: str, answer: str) -> Episode:
    turn = Turn(
        episode_id="e1",
        model="m",
        version="v1",
        task=task,
        request={"messages": [{"role": "user", "content": question}]},
        choices=[TurnChoice(message={"role": "assistant", "content": answer})],
    )
    return Episode(episode_id="e1", turns=[turn])


def test_the_checks_score_right_and_wrong_answers() -> None:
    assert format_ok("It is [Paris].") == 1.0
    assert format_ok("It is Paris.") == 0.0
    assert format_ok("The answer is [answer].") == 0.0  # the prompt's placeholder, copied
    assert arith_ok("What is 3 + 4? Reply with the number only.", " 7. ") == 1.0
    assert arith_ok("What is 3 + 4? Reply with the number only.", "3 + 4 = 7") == 1.0  # the final number
    assert arith_ok("What is 3 + 4? Reply with the number only.", "7.5") == 0.0  # exact match
    assert arith_ok("What is 3 + 4? Reply with the number only.", "8") == 0.0
    assert arith_ok("Say hi", "8") is None
    assert short_ok("A calm blue sea.") == 1.0
    assert short_ok("one two three four five six seven eight nine") == 0.0
    assert short_ok("") == 0.0


async def test_each_rubric_scores_its_own_task_through_the_rubric_api() -> None:
    rubrics = {r.name: r for r in TASK_RUBRICS}
    cases = [
        ("format", prompts("format")[0], "[Paris]", 1.0),
        ("arith", "What is 2 + 5? Reply with the number only.", "7", 1.0),
        ("arith", "What is 2 + 5? Reply with the number only.", "2 + 5 = 8", 0.0),
        ("short", prompts("short")[0], "Blue, wide and salty, always moving.", 1.0),
    ]
    for task, question, answer, expected in cases:
        ep = episode(task, question, answer)
        assert [r.name for r in TASK_RUBRICS if r.matches(ep)] == [task]
        assert (await rubrics[task].score(ep)).total == expected


def test_the_task_mix_is_a_rubric_file_and_held_out_prompts_are_never_live() -> None:
    assert [r.name for r in load_rubrics(demo_tasks.__file__)] == list(TASKS)
    for task in TASKS:
        live, held = set(prompts(task)), set(prompts(task, "heldout"))
        assert live and held and not live & held
    with pytest.raises(ValueError, match="unknown task"):
        prompts("nope")


def test_the_learning_report_writes_a_table_and_a_png(tmp_path: Path) -> None:
    rows = [
        {"version": "base", "status": "retired", "at_s": 0.0, "live": 0.2, "episodes": 90,
         "heldout": {"short": 0.1, "arith": 0.5}, "tokens": 0},
        {"version": "v1", "status": "serving", "at_s": 300.0, "live": 0.5, "episodes": 60,
         "heldout": {"short": 0.7, "arith": 0.5}, "entropy": 1.9, "kl_base": 0.02, "ratio_mean": 0.98,
         "ratio_min": 0.1, "ratio_max": 2.5, "clipped_frac": 0.01, "tokens": 4000,
         "gate": ("passed", 0.6, 0.3)},
    ]  # fmt: skip
    steps = [
        {"at_s": 100.0 * i, "entropy": 2.0, "entropy_base": 2.1, "kl_base": 0.01 * i} for i in range(1, 4)
    ]
    text = table(rows)
    assert text.count("\n") == 3  # header, rule, two versions
    assert "sh 0.70 ar 0.50" in text and "0.98 (0.10–2.5)" in text and "5.0m" in text
    assert "passed 0.60/0.30" in text
    png = plot(rows, steps, tmp_path / "curves.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
