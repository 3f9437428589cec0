"""Built-in scorers a rubric file names with `use = "<name>"`; parameters are keyword arguments.

Each takes the EpisodeView first and returns a float, or None to abstain (e.g. no reference in
the metadata, no tool call to judge). Matching scorers read their reference from the turn
metadata (`reference = "expected"` reads `metadata.expected`; dotted paths reach inside).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jsonschema
import orjson

from rewards.judge import llm_judge
from rewards.signals import implicit_feedback
from rewards.view import EpisodeView

_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n(.*)\n```\s*$", re.S)


def _lookup(meta: dict[str, Any], path: str) -> Any:
    node: Any = meta
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _norm(text: str, ignore_case: bool) -> str:
    text = " ".join(text.split())
    return text.lower() if ignore_case else text


def exact_match(
    episode: EpisodeView, *, reference: str = "reference", ignore_case: bool = True
) -> float | None:
    """1 when the final answer equals the reference (whitespace-normalised), else 0."""
    ref = _lookup(episode.metadata, reference)
    if ref is None:
        return None
    refs = ref if isinstance(ref, list) else [ref]
    answer = _norm(episode.final_answer, ignore_case)
    return float(any(answer == _norm(str(r), ignore_case) for r in refs))


def contains(episode: EpisodeView, *, reference: str = "reference", ignore_case: bool = True) -> float | None:
    """1 when the final answer contains the reference (any of a list), else 0."""
    ref = _lookup(episode.metadata, reference)
    if ref is None:
        return None
    refs = ref if isinstance(ref, list) else [ref]
    answer = _norm(episode.final_answer, ignore_case)
    return float(any(_norm(str(r), ignore_case) in answer for r in refs))


@lru_cache(maxsize=256)
def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def regex(
    episode: EpisodeView,
    *,
    pattern: str | None = None,
    reference: str | None = None,
    ignore_case: bool = False,
) -> float | None:
    """1 when `pattern` (or the regex in metadata[reference]) matches the final answer."""
    pat = pattern if pattern is not None else _lookup(episode.metadata, reference or "pattern")
    if not isinstance(pat, str):
        return None
    return float(_compiled(pat, re.I if ignore_case else 0).search(episode.final_answer) is not None)


def _json_of(text: str) -> Any:
    fenced = _FENCE.match(text.strip())
    return orjson.loads(fenced.group(1) if fenced else text)


def valid_json(episode: EpisodeView) -> float:
    """1 when the final answer is JSON (a ```json fence around it is allowed), else 0."""
    try:
        _json_of(episode.final_answer)
    except orjson.JSONDecodeError:
        return 0.0
    return 1.0


@lru_cache(maxsize=64)
def _validator(schema_json: bytes) -> jsonschema.protocols.Validator:
    schema = orjson.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def json_schema(
    episode: EpisodeView, *, schema: dict[str, Any] | None = None, reference: str = "schema"
) -> float | None:
    """1 when the final answer is JSON valid against `schema` (or metadata[reference]), else 0."""
    schema = schema if schema is not None else _lookup(episode.metadata, reference)
    if not isinstance(schema, dict):
        return None
    try:
        doc = _json_of(episode.final_answer)
    except orjson.JSONDecodeError:
        return 0.0
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    return float(validator.is_valid(doc))


def tool_call_wellformed(episode: EpisodeView) -> float | None:
    """Share of tool calls naming an offered tool with JSON-object arguments (None: no calls)."""
    calls = episode.tool_calls
    if not calls:
        return None
    offered = {(t.get("function") or {}).get("name") for t in episode.tools if isinstance(t, dict)}
    good = 0
    for c in calls:
        try:
            args = orjson.loads(c.arguments or "{}")
        except orjson.JSONDecodeError:
            continue
        good += isinstance(args, dict) and (not offered or c.name in offered)
    return good / len(calls)


def _feedback_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return {"up": 1.0, "thumbs_up": 1.0, "👍": 1.0, "down": 0.0, "thumbs_down": 0.0, "👎": 0.0}.get(
            value.strip().lower()
        )
    return None


def tool_success(episode: EpisodeView, *, name: str = "tool_success") -> float | None:
    """Mean of the product's `name` feedback about tool calls (bool or number; None: none given)."""
    vals = [v for f in episode.feedback if f.name == name if (v := _feedback_value(f.value)) is not None]
    return sum(vals) / len(vals) if vals else None


def feedback(episode: EpisodeView, *, names: list[str] | None = None) -> float | None:
    """The newest explicit feedback as reward: thumbs up 1, down 0, a number as given."""
    for f in reversed(episode.feedback):
        if names is None or f.name in names:
            v = _feedback_value(f.value)
            if v is not None:
                return v
    return None


def _penalty(amount: float, limit: float) -> float:
    """0 within the limit, falling linearly to -1 at twice the limit."""
    return -min(1.0, max(0.0, amount - limit) / limit) if limit > 0 else 0.0


def length_penalty(
    episode: EpisodeView, *, max_chars: int | None = None, max_tokens: int | None = None
) -> float:
    """0 up to the limit, down to -1 at twice it (characters of the answer, or completion tokens)."""
    if max_tokens is not None:
        return _penalty(episode.completion_tokens, max_tokens)
    return _penalty(len(episode.final_answer), max_chars or 2000)


def latency_penalty(episode: EpisodeView, *, max_ms: float = 5000.0) -> float:
    """0 up to `max_ms` of model time in the episode, down to -1 at twice it."""
    return _penalty(episode.latency_ms, max_ms)


SCORERS: dict[str, Callable[..., Any]] = {
    "exact_match": exact_match,
    "contains": contains,
    "regex": regex,
    "valid_json": valid_json,
    "json_schema": json_schema,
    "tool_call_wellformed": tool_call_wellformed,
    "tool_success": tool_success,
    "feedback": feedback,
    "implicit_feedback": implicit_feedback,
    "length_penalty": length_penalty,
    "latency_penalty": latency_penalty,
    "llm_judge": llm_judge,
}
