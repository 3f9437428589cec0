"""The Rubric API: reward functions with weights, zero-weight metrics, and the rubric that runs them.

    @reward(weight=1.0)          a function over an EpisodeView returning a float (sync or async)
    @metric                      the same with weight 0: observed, not part of the total
    Rubric(name, fns, match=…)   a named, versioned set of them and the traffic it scores

A function may return None to abstain (no value, no error). One that raises, returns a non-number
or runs past its timeout is recorded as that function's error: a bad rollout is data, not a crash.
Sync functions run in a worker thread so a timeout can be enforced; pure, fast ones may say
`inline=True` to run on the event loop (the built-in scorers do).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson

from ledger.records import Episode, Score
from rewards.view import EpisodeView

SCORE_NAMESPACE = uuid.UUID("6f1c1d2e-3b7a-5e8f-9a0b-7c6d5e4f3a21")


class Observer(Protocol):
    """Receives one observation per function call (the worker's Prometheus metrics)."""

    def observe(
        self, rubric: str, function: str, seconds: float, value: float | None, error: bool
    ) -> None: ...


@dataclass(frozen=True)
class RewardFn:
    fn: Callable[..., Any]
    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)
    inline: bool = False
    timeout_s: float | None = None

    def __call__(self, episode: EpisodeView, **overrides: Any) -> Any:
        return (
            self.fn(episode, **{**self.params, **overrides}) if overrides else self.fn(episode, **self.params)
        )

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    @property
    def runs_inline(self) -> bool:
        return self.inline and not self.is_async

    def fingerprint(self) -> list[Any]:
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):
            source = f"{getattr(self.fn, '__module__', '')}.{getattr(self.fn, '__qualname__', self.name)}"
        return [self.name, self.weight, dict(self.params), source]


def _wrap(fn: Any, weight: float, name: str | None, inline: bool, timeout_s: float | None) -> RewardFn:
    if isinstance(fn, RewardFn):
        return replace(fn, weight=weight, name=name or fn.name)
    return RewardFn(fn, name or fn.__name__, float(weight), {}, inline, timeout_s)


def reward(
    fn: Callable[..., Any] | None = None,
    *,
    weight: float = 1.0,
    name: str | None = None,
    inline: bool = False,
    timeout_s: float | None = None,
) -> Any:
    """Mark a reward function: `@reward` or `@reward(weight=0.5)`."""
    if fn is not None:
        return _wrap(fn, weight, name, inline, timeout_s)
    return lambda f: _wrap(f, weight, name, inline, timeout_s)


def metric(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    inline: bool = False,
    timeout_s: float | None = None,
) -> Any:
    """Mark a metric (weight 0): recorded in the Score, not in the total."""
    return reward(fn, weight=0.0, name=name, inline=inline, timeout_s=timeout_s)


@dataclass(frozen=True)
class Match:
    """Which traffic a rubric scores; every given field must match (lists: any of)."""

    tenant: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    system: re.Pattern[str] | None = None

    @classmethod
    def of(cls, spec: Mapping[str, Any] | Match | None) -> Match:
        if spec is None or isinstance(spec, Match):
            return spec or cls()
        unknown = set(spec) - {"tenant", "model", "task", "system"}
        if unknown:
            raise ValueError(f"unknown match keys {sorted(unknown)}; use tenant, model, task, system")

        def many(v: Any) -> tuple[str, ...]:
            return () if v is None else (v,) if isinstance(v, str) else tuple(str(x) for x in v)

        system = spec.get("system")
        return cls(
            many(spec.get("tenant")),
            many(spec.get("model")),
            many(spec.get("task")),
            re.compile(system) if system else None,
        )

    def __call__(self, view: EpisodeView) -> bool:
        return (
            (not self.tenant or view.tenant in self.tenant)
            and (not self.model or view.model in self.model)
            and (not self.task or view.task in self.task)
            and (self.system is None or self.system.search(view.system_prompt) is not None)
        )

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tenant": self.tenant, "model": self.model, "task": self.task}
        out["system"] = self.system.pattern if self.system else None
        return out


def score_id(tenant: str, episode_id: str, rubric: str, version: str, feedback_seq: int, turns: int) -> str:
    """Deterministic: a replay of the same episode state yields the same id. The tenant is part
    of it: two tenants may use one episode id (clients choose them)."""
    key = f"{tenant}\x1f{episode_id}\x1f{rubric}\x1f{version}\x1f{feedback_seq}\x1f{turns}"
    return str(uuid.uuid5(SCORE_NAMESPACE, key))


def _as_value(out: Any) -> float | None:
    if out is None:
        return None
    if isinstance(out, bool | int | float) and math.isfinite(out):
        return float(out)
    raise TypeError(f"returned {out!r:.60}, not a finite number")


class Rubric:
    def __init__(
        self,
        name: str,
        functions: Iterable[RewardFn | Callable[..., Any]],
        *,
        match: Mapping[str, Any] | Match | None = None,
        version: str | None = None,
        weights: Mapping[str, float] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        fns = [f if isinstance(f, RewardFn) else _wrap(f, 1.0, None, False, None) for f in functions]
        names = [f.name for f in fns]
        if len(set(names)) != len(names):
            raise ValueError(f"rubric {name!r}: function names repeat: {names}")
        weights = dict(weights or {})
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"rubric {name!r}: weights for unknown functions {sorted(unknown)}")
        self.name = name
        self.functions = tuple(
            replace(f, weight=float(weights[f.name])) if f.name in weights else f for f in fns
        )
        self.match = Match.of(match)
        self.timeout_s = timeout_s
        self._inline = tuple(f.runs_inline for f in self.functions)
        self.inline_only = all(self._inline)  # never suspends: the worker awaits it without a task
        self._given_version = version
        self.version = version or self._derive_version()

    def _derive_version(self) -> str:
        blob = orjson.dumps(
            [self.name, self.match.describe(), [f.fingerprint() for f in self.functions]],
            default=str,
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(blob).hexdigest()[:12]

    def __repr__(self) -> str:
        return (
            f"Rubric({self.name!r}, version={self.version!r}, functions={[f.name for f in self.functions]})"
        )

    @property
    def weights(self) -> dict[str, float]:
        return {f.name: f.weight for f in self.functions}

    def with_weights(self, overrides: Mapping[str, float]) -> Rubric:
        """The same rubric with some weights replaced (a new version unless one was given)."""
        if not overrides:
            return self
        return Rubric(
            self.name,
            self.functions,
            match=self.match,
            version=self._given_version,
            weights=overrides,
            timeout_s=self.timeout_s,
        )

    def matches(self, episode: Episode | EpisodeView) -> bool:
        return self.match(episode if isinstance(episode, EpisodeView) else EpisodeView.of(episode))

    async def score(self, episode: Episode | EpisodeView, observer: Observer | None = None) -> Score:
        """Run every function and return the Score; never raises for a function's failure."""
        view = episode if isinstance(episode, EpisodeView) else EpisodeView.of(episode)
        values: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        for f, inline in zip(self.functions, self._inline, strict=True):
            start = time.perf_counter()
            try:
                values[f.name] = _as_value(f.fn(view, **f.params) if inline else await self._call(f, view))
            except Exception as exc:  # a failing function is data: classify and record it
                values[f.name] = None
                errors[f.name] = _describe(exc, f.timeout_s or self.timeout_s)
            if observer is not None:
                observer.observe(
                    self.name, f.name, time.perf_counter() - start, values[f.name], f.name in errors
                )
        rewards = [f for f in self.functions if f.weight != 0.0]
        counted = [f for f in rewards if values[f.name] is not None]
        total = None if rewards and not counted else sum(f.weight * (values[f.name] or 0.0) for f in counted)
        seq = len(view.feedback)
        return Score(
            id=score_id(view.tenant, view.episode_id, self.name, self.version, seq, len(view.turns)),
            episode_id=view.episode_id,
            tenant=view.tenant,
            rubric=self.name,
            rubric_version=self.version,
            total=total,
            values=values,
            errors=errors,
            weights=self.weights,
            feedback_seq=seq,
            version=view.version,
            task=view.task,
        )

    async def _call(self, f: RewardFn, view: EpisodeView) -> Any:
        timeout = f.timeout_s or self.timeout_s
        if f.is_async:
            return await asyncio.wait_for(f(view), timeout)
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(None, lambda: f(view)), timeout)


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timeout: no result within {timeout_s:g}s"
    return f"{type(exc).__name__}: {exc}"[:500]
