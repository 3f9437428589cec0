"""The simulated product of `rlgw demo`: users asking for a colour through the openai SDK.

Each user runs episodes back to back: one or two turns (`X-Task: colours`, the last with
`X-Episode-End: true`), and a share of episodes get a thumbs feedback a few seconds later —
late feedback that re-scores the episode. The rubric rewards an answer that names a colour.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai

from rewards import Rubric, metric, reward

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray")
PROMPTS = ("Say a colour", "Name a colour", "What colour is it?", "Tell me a colour please", "Pick a colour")


@reward(weight=1.0)
def names_a_colour(episode) -> float:  # type: ignore[no-untyped-def]
    words = episode.final_answer.lower().replace(".", " ").replace(",", " ").split()
    return float(any(w in COLOURS for w in words))


@metric
def answer_words(episode) -> float:  # type: ignore[no-untyped-def]
    return float(len(episode.final_answer.split()))


@metric
def thumbs(episode) -> float | None:  # type: ignore[no-untyped-def]
    votes = [f.value for f in episode.feedback if f.name == "thumbs"]
    return float(votes[-1]) if votes else None


COLOUR_RUBRIC = Rubric("colours", [names_a_colour, answer_words, thumbs], match={"task": "colours"})


@dataclass
class Traffic:
    episodes: int = 0
    requests: int = 0
    errors: int = 0
    feedback: int = 0
    last_error: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


async def user(base_url: str, stop: threading.Event, traffic: Traffic, seed: int, max_tokens: int) -> None:
    rng = random.Random(seed)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="demo", max_retries=2, timeout=120)
    thumbs: set[asyncio.Task[None]] = set()  # this user's late feedback, sent before its client closes
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        while not stop.is_set():
            turns = 1 if rng.random() < 0.8 else 2
            messages: list[dict[str, str]] = [{"role": "user", "content": rng.choice(PROMPTS)}]
            episode_id: str | None = None
            try:
                for t in range(turns):
                    headers = {"X-Task": "colours"}
                    if episode_id:
                        headers["X-Episode-Id"] = episode_id
                    if t == turns - 1:
                        headers["X-Episode-End"] = "true"
                    raw = await client.chat.completions.with_raw_response.create(
                        model="rlgw",
                        messages=cast(Any, messages),
                        max_tokens=max_tokens,
                        temperature=1.0,
                        extra_headers=headers,
                    )
                    traffic.requests += 1
                    episode_id = raw.headers["x-episode-id"]
                    answer = raw.parse().choices[0].message.content or ""
                    messages += [
                        {"role": "assistant", "content": answer},
                        {"role": "user", "content": "Another one?"},
                    ]
                traffic.episodes += 1
                if episode_id and rng.random() < 0.2:
                    task = asyncio.create_task(
                        late_thumbs(http, episode_id, messages, rng.uniform(1, 4), traffic)
                    )
                    traffic.tasks.add(task)
                    thumbs.add(task)
                    task.add_done_callback(traffic.tasks.discard)
                    task.add_done_callback(thumbs.discard)
            except (openai.APIError, httpx.HTTPError) as exc:
                traffic.errors += 1
                traffic.last_error = f"{type(exc).__name__}: {exc}"[:200]
                await asyncio.sleep(0.5)
        await asyncio.gather(*thumbs, return_exceptions=True)
    await client.close()


async def late_thumbs(
    http: httpx.AsyncClient, episode_id: str, messages: list[dict[str, str]], delay: float, traffic: Traffic
) -> None:
    await asyncio.sleep(delay)
    answers = " ".join(m["content"] for m in messages if m["role"] == "assistant").lower().split()
    up = any(w.strip(".,") in COLOURS for w in answers)
    try:
        resp = await http.post("/feedback", json={"episode_id": episode_id, "name": "thumbs", "value": up})
    except httpx.HTTPError as exc:
        traffic.errors += 1
        traffic.last_error = f"feedback: {type(exc).__name__}: {exc}"[:200]
        return
    if resp.status_code == 200:
        traffic.feedback += 1


def run_users(
    base_url: str, users: int, stop: threading.Event, traffic: Traffic, max_tokens: int = 12
) -> None:
    """Drive `users` simulated users until `stop` is set (run in a thread)."""

    async def main() -> None:
        await asyncio.gather(*(user(base_url, stop, traffic, seed, max_tokens) for seed in range(users)))
        await asyncio.gather(*list(traffic.tasks), return_exceptions=True)

    asyncio.run(main())
