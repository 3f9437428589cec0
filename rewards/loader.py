"""Load rubrics from a file: TOML naming built-in scorers, or Python defining `Rubric`s.

    [[rubric]]
    name = "geo"                      # required; version is derived unless given
    match = { task = "geo", tenant = ["acme"], system = "(?i)geography" }

    [[rubric.scorer]]
    use = "contains"                  # a built-in scorer (rewards.scorers.SCORERS)
    name = "says_paris"               # optional, default: the scorer's name
    weight = 1.0                      # 0 makes it a metric
    reference = "expected"            # any other key is the scorer's parameter

A Python file is imported and every module-level `Rubric` in it is loaded. With a config,
`rewards.weights` overrides weights and the judge scorer defaults to `rewards.judge_url/model`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import tomllib
from pathlib import Path
from typing import Any

from rewards.config import RewardsConfig
from rewards.rubric import RewardFn, Rubric
from rewards.scorers import SCORERS


class RubricFileError(ValueError):
    """A rubric file that cannot be loaded; the message names the file and the problem."""


def load_rubrics(path: Path | str, config: RewardsConfig | None = None) -> list[Rubric]:
    path = Path(path)
    if not path.is_file():
        raise RubricFileError(f"rubric file not found: {path}")
    if path.suffix == ".toml":
        rubrics = _from_toml(path, config or RewardsConfig())
    elif path.suffix == ".py":
        rubrics = _from_python(path)
    else:
        raise RubricFileError(f"{path}: a rubric file is .toml or .py")
    names = [r.name for r in rubrics]
    if not rubrics or len(set(names)) != len(names):
        raise RubricFileError(f"{path}: needs at least one rubric, each with its own name (got {names})")
    if config is not None:
        rubrics = [r.with_weights(config.weights.get(r.name, {})) for r in rubrics]
    return rubrics


def _from_python(path: Path) -> list[Rubric]:
    module_name = "rlgw_rubrics_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RubricFileError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # inspect.getsource needs it to derive versions
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise RubricFileError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
    return [v for v in vars(module).values() if isinstance(v, Rubric)]


def _from_toml(path: Path, config: RewardsConfig) -> list[Rubric]:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RubricFileError(f"{path}: {exc}") from exc
    out = []
    for i, spec in enumerate(doc.get("rubric") or []):
        where = f"{path}: rubric #{i + 1}"
        unknown = set(spec) - {"name", "version", "match", "scorer", "timeout_s"}
        if unknown or "name" not in spec:
            raise RubricFileError(f"{where}: needs 'name'; unknown keys {sorted(unknown)}")
        fns = [_scorer(s, f"{where} ({spec['name']})", config) for s in spec.get("scorer") or []]
        try:
            out.append(
                Rubric(
                    spec["name"],
                    fns,
                    match=spec.get("match"),
                    version=spec.get("version"),
                    timeout_s=float(spec.get("timeout_s", config.function_timeout_s)),
                )
            )
        except (ValueError, TypeError) as exc:
            raise RubricFileError(f"{where}: {exc}") from exc
    return out


def _scorer(spec: dict[str, Any], where: str, config: RewardsConfig) -> RewardFn:
    spec = dict(spec)
    use = spec.pop("use", None)
    if use not in SCORERS:
        raise RubricFileError(f"{where}: scorer 'use' must be one of {sorted(SCORERS)}, got {use!r}")
    fn = SCORERS[use]
    name = str(spec.pop("name", use))
    weight = float(spec.pop("weight", 1.0))
    timeout_s = spec.pop("timeout_s", None)
    accepted = {
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = set(spec) - accepted
    if unknown:
        raise RubricFileError(f"{where}: scorer {use!r} takes {sorted(accepted)}, not {sorted(unknown)}")
    if use == "llm_judge":
        if config.judge_url:
            spec.setdefault("url", config.judge_url)
        if config.judge_model:
            spec.setdefault("model", config.judge_model)
    inline = not inspect.iscoroutinefunction(fn)
    return RewardFn(fn, name, weight, spec, inline, None if timeout_s is None else float(timeout_s))
