"""Held-out reward of a version, measured by the learning benchmark itself: the task mix's
held-out prompts (never asked by the simulated users, rlgw/demo_tasks.py) sampled straight from
the engine under the version's adapter name — not through the gateway, so nothing is recorded
or trained on — and scored with the rubrics' own checks.

Each version answers the same (prompt, seed) list, so versions differ by their weights, not by
their draws (common random numbers: vLLM's per-request `seed`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import openai

from rlgw.demo_tasks import CHECKS, TASKS, prompts


@dataclass(frozen=True)
class HeldOutSet:
    per_task: int = 24  # samples per task (prompts cycled, one seed each)
    max_tokens: int = 40
    temperature: float = 0.8

    def items(self) -> list[tuple[str, str, int]]:
        """(task, prompt, seed) for every sample."""
        out = []
        for task in TASKS:
            pool = prompts(task, "heldout")
            out += [(task, pool[i % len(pool)], 1000 + i) for i in range(self.per_task)]
        return out


async def _evaluate(engine_url: str, model: str, heldout: HeldOutSet, concurrency: int) -> dict[str, float]:
    client = openai.AsyncOpenAI(base_url=engine_url, api_key="none", max_retries=1, timeout=600)
    gate = asyncio.Semaphore(concurrency)

    async def one(task: str, prompt: str, seed: int) -> tuple[str, float | None]:
        async with gate:
            resp = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=heldout.max_tokens,
                temperature=heldout.temperature,
                seed=seed,
            )
        return task, CHECKS[task](prompt, resp.choices[0].message.content or "")

    try:
        results = await asyncio.gather(*(one(*it) for it in heldout.items()))
    finally:
        await client.close()
    scores: dict[str, list[float]] = {t: [] for t in TASKS}
    for task, value in results:
        if value is not None:
            scores[task].append(value)
    return {t: sum(v) / len(v) for t, v in scores.items() if v}


def evaluate(
    engine_url: str, model: str, heldout: HeldOutSet | None = None, concurrency: int = 6
) -> dict[str, float]:
    """Mean held-out reward per task of the engine's `model` (an adapter name or the base)."""
    return asyncio.run(_evaluate(engine_url, model, heldout or HeldOutSet(), concurrency))
