"""The task mix of `rlgw demo --model …` and `benchmarks/learning.py`: three rubrics a pretrained
instruct model meets below its ceiling, and simulated users asking for them.

    format   answer a question with the answer in square brackets, `[Paris]`
    arith    a small sum (its final number must match exactly): a skill to keep, not to learn
    short    describe a thing in at most 8 words

Also a rubric file: `rlgw up --rubrics rlgw/demo_tasks.py` loads the three rubrics (every
module-level `Rubric`). Each check is a plain function over the answer text (`*_ok`), so the
held-out evaluation of benchmarks/learning.py scores with the same code as the rubric worker.
Live prompts and held-out prompts come from disjoint pools (`prompts(split=...)`).
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from rewards import Rubric, metric, reward

MAX_WORDS = 8
QUESTIONS = (
    ("What is the capital of France?", "Paris"),
    ("What is the largest planet?", "Jupiter"),
    ("What colour is grass?", "green"),
    ("How many legs does a spider have?", "8"),
    ("What is the opposite of hot?", "cold"),
    ("Which animal says moo?", "cow"),
    ("What is frozen water called?", "ice"),
    ("What is the capital of Italy?", "Rome"),
    ("Which season comes after winter?", "spring"),
    ("What do bees make?", "honey"),
    ("What is the capital of Spain?", "Madrid"),
    ("How many days are in a week?", "7"),
    ("What colour is the sky on a clear day?", "blue"),
    ("What is the closest star to Earth?", "the Sun"),
    ("Which metal is liquid at room temperature?", "mercury"),
    ("What is the capital of Japan?", "Tokyo"),
)
THINGS = (
    "the sea", "a cat", "a mountain", "coffee", "a library", "the moon", "a bicycle", "rain",
    "a forest", "a city at night", "bread", "a guitar", "winter", "a river", "a computer", "a garden",
)  # fmt: skip


def format_ok(answer: str) -> float:
    """1 when the answer holds a non-empty bracketed span, `[…]`, other than the prompt's own
    placeholder `[answer]` copied."""
    spans = re.findall(r"\[([^\[\]\n]{1,40})\]", answer)
    return float(any(s.strip().lower() not in ("", "answer") for s in spans))


def arith_ok(question: str, answer: str) -> float | None:
    """1 when the answer's last number is exactly the sum asked for (the final answer extracted,
    then an exact match, as maths verifiers do: "3 + 4 = 7" and "7" pass, "7.5" and "8" fail);
    None when the question holds no sum."""
    m = re.search(r"(\d+) \+ (\d+)", question)
    if m is None:
        return None
    numbers = re.findall(r"-?\d+(?:\.\d+)?", answer)
    return float(bool(numbers) and numbers[-1] == str(int(m[1]) + int(m[2])))


def short_ok(answer: str) -> float:
    """1 for a non-empty answer of at most MAX_WORDS words."""
    return float(0 < len(answer.split()) <= MAX_WORDS)


@reward(weight=1.0)
def bracketed(episode) -> float:  # type: ignore[no-untyped-def]
    return format_ok(episode.final_answer)


@reward(weight=1.0)
def exact_sum(episode) -> float | None:  # type: ignore[no-untyped-def]
    return arith_ok(" ".join(episode.user_messages), episode.final_answer)


@reward(weight=1.0)
def within_words(episode) -> float:  # type: ignore[no-untyped-def]
    return short_ok(episode.final_answer)


@metric
def answer_words(episode) -> float:  # type: ignore[no-untyped-def]
    return float(len(episode.final_answer.split()))


FORMAT_RUBRIC = Rubric("format", [bracketed, answer_words], match={"task": "format"})
ARITH_RUBRIC = Rubric("arith", [exact_sum, answer_words], match={"task": "arith"})
SHORT_RUBRIC = Rubric("short", [within_words, answer_words], match={"task": "short"})
TASK_RUBRICS = [FORMAT_RUBRIC, ARITH_RUBRIC, SHORT_RUBRIC]
CHECKS: dict[str, Callable[[str, str], float | None]] = {
    "format": lambda q, a: format_ok(a),
    "arith": arith_ok,
    "short": lambda q, a: short_ok(a),
}


def prompts(task: str, split: str = "live") -> list[str]:
    """Every prompt of `task` in `split`: "live" (what users ask) or "heldout" (never asked live)."""
    held = split == "heldout"
    if task == "format":
        qs = [q for i, (q, _) in enumerate(QUESTIONS) if (i % 4 == 3) == held]
        return [f"{q} Put the answer in square brackets, like [answer]." for q in qs]
    if task == "arith":
        pairs = [(a, b) for a in range(1, 10) for b in range(1, 10) if ((a * 7 + b) % 4 == 0) == held]
        return [f"What is {a} + {b}? Reply with the number only." for a, b in pairs]
    if task == "short":
        return [
            f"Describe {t} in at most {MAX_WORDS} words."
            for i, t in enumerate(THINGS)
            if (i % 4 == 3) == held
        ]
    raise ValueError(f"unknown task {task!r}")


TASKS = ("format", "arith", "short")


@dataclass
class TaskTraffic:
    episodes: int = 0
    errors: int = 0
    last_error: str = ""


async def task_user(
    base_url: str, stop: threading.Event, traffic: TaskTraffic, seed: int, max_tokens: int, temperature: float
) -> None:
    rng = random.Random(seed)
    pools = {t: prompts(t) for t in TASKS}
    client = openai.AsyncOpenAI(base_url=base_url, api_key="demo", max_retries=2, timeout=300)
    while not stop.is_set():
        task = rng.choice(TASKS)
        try:
            await client.chat.completions.create(
                model="rlgw",
                messages=[{"role": "user", "content": rng.choice(pools[task])}],
                max_tokens=max_tokens,
                temperature=temperature,
                extra_headers={"X-Task": task, "X-Episode-End": "true"},
            )
            traffic.episodes += 1
        except (openai.APIError, httpx.HTTPError) as exc:
            traffic.errors += 1
            traffic.last_error = f"{type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(0.5)
    await client.close()


def run_task_users(
    base_url: str,
    users: int,
    stop: threading.Event,
    traffic: TaskTraffic | None = None,
    max_tokens: int = 40,
    temperature: float = 0.8,
) -> None:
    """Drive `users` simulated users on the task mix until `stop` is set (run in a thread)."""
    t = traffic or TaskTraffic()

    async def main() -> None:
        await asyncio.gather(
            *(task_user(base_url, stop, t, s, max_tokens, temperature) for s in range(users))
        )

    asyncio.run(main())


def task_of(messages: list[dict[str, Any]]) -> str | None:
    """The task a held-out prompt belongs to (by its wording)."""
    text = " ".join(str(m.get("content", "")) for m in messages)
    if "square brackets" in text:
        return "format"
    if re.search(r"\d+ \+ \d+", text):
        return "arith"
    return "short" if "words" in text else None
