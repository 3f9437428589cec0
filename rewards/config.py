"""The `[rewards]` config section: rubrics, scoring timeouts, the judge, the worker group.

`rlgw` assembles it with the other packages' sections into one `Settings`; `RewardsSettings`
names the parts of it a rubric worker reads. Imports nothing
heavy (a test enforces it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import Field

from ledger.config import LedgerConfig, Section


class RewardsConfig(Section):
    rubrics: Path | None = None
    """A rubric file (TOML or Python) to load."""
    idle_timeout_s: float = 300.0
    """An episode with no new turn for this long is closed and scored."""
    weights: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Weight overrides: {rubric: {function: weight}}."""
    function_timeout_s: float = 10.0
    """A reward function taking longer is recorded as an error."""
    judge_url: str | None = None
    """OpenAI-compatible base URL for LLM-judge scorers (e.g. http://gw:8000/v1). There is no
    fallback: with neither this nor a `url` on the judge scorer (which wins), every judge call
    is recorded as an error."""
    judge_model: str | None = None
    """Model name for the judge (a `model` on the judge scorer wins; none at all: an error)."""
    judge_probe_interval_s: float = 3600.0
    """Every rubric worker re-runs each judge's probe set this often and publishes an alarm when
    its grades drifted (rewards/judge_watch.py). 0: never; off without a judge."""
    judge_probe_max_drift: float = 0.1
    """A probe rate (injection probes passed, correct controls passed) that moved more than this
    from the baseline is a drift of the judge: an alarm."""
    judge_probe_baseline: Path | None = None
    """A report `rlgw judge probe --out FILE` wrote: every judge's baseline. None: each judge's
    first run without errors, kept in `<data_dir>/judge-baselines.json` across restarts."""
    group: str = "rlgw-rubrics"
    """Consumer group of the rubric workers: workers in one group share the partitions."""
    keep_scored_s: float = 3600.0
    """A scored episode stays in a worker's memory this long, so late feedback re-scores it."""
    commit_interval_s: float = 30.0
    """Offsets of open episodes' records are committed at most this late; an episode open across
    a crash is then rebuilt from the store (when the worker has one) or scored on what follows."""


class RewardsSettings(Protocol):
    """What a rubric worker reads of the assembled config (`rlgw.config.Settings` has it)."""

    data_dir: Path
    rewards: RewardsConfig
    ledger: LedgerConfig
