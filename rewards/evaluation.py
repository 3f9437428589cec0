"""The evaluation: a version against its parent on held-out prompts, scored by the same rubrics.

    prompts    the newest held-out prompts (ledger/holdout.py: episodes no version trained on,
               read through the gateway), plus a user's JSONL of tasks (`load_dataset`)
    sampling   each prompt answered once by the version and once by its parent through the
               gateway, pinned per request, as eval traffic (rewards/eval_client.py), with the
               prompt's own sampling parameters and one seed for both sides
    scoring    every rubric that matches the prompt scores both answers (rewards/rubric.py)
    figures    per rubric, its total (`reward`) and each function's value: parent mean,
               version mean, and the paired difference with its interval (rewards/paired.py)
    verdict    `worse` when a rubric's reward is confidently below the parent's by more than
               the margin; else `pass` (`no_data` when no rubric had two scored pairs)

The gate before a canary (docs/versions.md) and `rlgw eval` run this same function.
`evaluate_version(gateway_url, version, rubrics, ...)` is the one call for a script.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ledger.holdout import EvalPrompt
from ledger.records import Episode, Turn, TurnChoice
from rewards.eval_client import EvalClient, EvalRequestError, GatewayEvalClient
from rewards.eval_report import EvalReport, EvalRow
from rewards.paired import paired
from rewards.rubric import Rubric

REWARD = "reward"  # the figure of a rubric's weighted total; the others are its functions
PROMPT_KEYS = ("id", "task", "tenant", "model", "metadata")  # a dataset line's non-request keys


def load_dataset(path: Path) -> list[EvalPrompt]:
    """Tasks from a JSONL file: each line a chat request (`messages`, sampling parameters,
    `tools`) with optional `id`, `task`, `tenant`, `model` and `metadata` (rubrics may read a
    reference answer from it)."""
    out = []
    for i, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{i}: not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise ValueError(f"{path}:{i}: a task needs a 'messages' list")
        request = {k: v for k, v in row.items() if k not in PROMPT_KEYS}
        given = {k: row[k] for k in PROMPT_KEYS if row.get(k) is not None}
        out.append(EvalPrompt.model_validate({"id": f"{path.name}:{i}", **given, "request": request}))
    return out


def _seed(prompt_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(prompt_id.encode(), digest_size=4).digest(), "big")


def _body(prompt: EvalPrompt, max_tokens: int | None) -> dict[str, Any]:
    """The request both sides get: the prompt's, with one seed, capped at `max_tokens`."""
    body = dict(prompt.request)
    body.setdefault("seed", _seed(prompt.id))
    if max_tokens is not None:
        for key in ("max_tokens", "max_completion_tokens"):
            if key in body:
                body[key] = min(int(body[key]), max_tokens)
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = max_tokens
    return body


def _episode(prompt: EvalPrompt, version: str, body: dict[str, Any], reply: dict[str, Any]) -> Episode:
    """The answer as a one-turn episode, the shape a rubric scores."""
    choices = reply.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    eid = f"eval:{version}:{prompt.id}"
    turn = Turn(
        episode_id=eid,
        tenant=prompt.tenant,
        model=prompt.model,
        version=version,
        request=body,
        choices=[TurnChoice(message=first.get("message") or {}, finish_reason=first.get("finish_reason"))],
        usage=reply.get("usage"),
        task=prompt.task,
        metadata=dict(prompt.metadata),
    )
    return Episode(episode_id=eid, tenant=prompt.tenant, turns=[turn], ended=True)


async def _figures(rubric: Rubric, episode: Episode) -> dict[str, float | None]:
    score = await rubric.score(episode)
    return {REWARD: score.total, **score.values}


async def evaluate(
    client: EvalClient,
    rubrics: Sequence[Rubric],
    version: str,
    parent: str,
    prompts: Sequence[EvalPrompt],
    *,
    margin: float = 0.0,
    confidence: float = 0.9,
    concurrency: int = 4,
    max_tokens: int | None = None,
) -> EvalReport:
    """Answer each prompt with `version` and `parent`, score both, compare (module docstring)."""
    started = time.monotonic()
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    weights: dict[tuple[str, str], float] = {}
    failed: dict[str, list[str]] = {version: [], parent: []}
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(prompt: EvalPrompt) -> None:
        body = _body(prompt, max_tokens)
        async with gate:
            got: tuple[dict[str, Any] | BaseException, ...] = await asyncio.gather(
                client.complete(version, body), client.complete(parent, body), return_exceptions=True
            )
        mine, theirs = got
        for side, answer in ((version, mine), (parent, theirs)):
            if isinstance(answer, EvalRequestError):
                failed[side].append(f"{prompt.id}: {answer}"[:300])
            elif isinstance(answer, BaseException):
                raise answer
        if isinstance(mine, BaseException) or isinstance(theirs, BaseException):
            return
        ours, base = _episode(prompt, version, body, mine), _episode(prompt, parent, body, theirs)
        for rubric in rubrics:
            if not rubric.matches(ours):
                continue
            v, p = await _figures(rubric, ours), await _figures(rubric, base)
            for name, value in v.items():
                if value is not None and p.get(name) is not None:
                    pairs[(rubric.name, name)].append((float(p[name] or 0.0), float(value)))
            weights.update({(rubric.name, f.name): f.weight for f in rubric.functions})

    await asyncio.gather(*(one(p) for p in prompts))
    rows = []
    for (rubric_name, name), values in sorted(pairs.items(), key=lambda kv: (kv[0][0], kv[0][1] != REWARD)):
        cmp = paired([p for p, _ in values], [v for _, v in values], confidence)
        rows.append(EvalRow.of(rubric_name, name, weights.get((rubric_name, name)), cmp, margin, REWARD))
    return EvalReport.decide(
        version,
        parent,
        rows,
        prompts=len(prompts),
        failed=failed[version] + (failed[parent] if parent != version else []),
        version_failed=len(failed[version]),
        parent_failed=len(failed[parent]),
        margin=margin,
        confidence=confidence,
        seconds=time.monotonic() - started,
    )


async def parent_of(client: EvalClient, version: str) -> str:
    """The version's parent, as the gateway's listing names it."""
    listing = await client.listing()
    for v in listing.get("versions") or []:
        if v.get("id") == version:
            return str(v.get("parent") or listing.get("serving") or "base")
    raise EvalRequestError(f"version {version} is not registered on the gateway")


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation runs (the gate's come from the `[versions]` section: `rlgw` passes them)."""

    n: int = 16
    """The newest held-out prompts used (0: only the dataset's tasks)."""
    margin: float = 0.0
    confidence: float = 0.9
    max_tokens: int | None = 64
    concurrency: int = 2
    dataset: Path | None = None
    """A JSONL file of tasks, added to the held-out prompts (`load_dataset`)."""


async def evaluate_on_gateway(
    client: EvalClient,
    version: str,
    rubrics: Sequence[Rubric],
    settings: EvalSettings = EvalSettings(),
    *,
    parent: str | None = None,
) -> EvalReport:
    """`evaluate` on the gateway's newest `settings.n` held-out prompts (and a dataset's tasks)."""
    s = settings
    prompts = list(await client.prompts(s.n)) if s.n > 0 else []
    if s.dataset is not None:
        prompts += load_dataset(s.dataset)
    return await evaluate(
        client,
        rubrics,
        version,
        parent or await parent_of(client, version),
        prompts,
        margin=s.margin,
        confidence=s.confidence,
        concurrency=s.concurrency,
        max_tokens=s.max_tokens,
    )


def evaluate_version(
    gateway_url: str,
    version: str,
    rubrics: Sequence[Rubric],
    settings: EvalSettings = EvalSettings(),
    *,
    parent: str | None = None,
    admin_key: str | None = None,
) -> EvalReport:
    """Evaluate `version` against `parent` (default: its own parent) through a running gateway;
    blocking (call it from a thread when an event loop runs). `report.rows` holds each
    rubric's figures; `report.reward(rubric)` its reward row."""

    async def run() -> EvalReport:
        client = GatewayEvalClient(gateway_url, admin_key)
        try:
            return await evaluate_on_gateway(client, version, rubrics, settings, parent=parent)
        finally:
            await client.close()

    return asyncio.run(run())
