"""The gateway's config sections: `[gateway]` (serving, limits, recording, exploration) and
`[versions]` (loading, canary and rollback decisions). `rlgw` assembles them with the other
packages' sections into one `Settings`; `GatewaySettings` names the parts of it the gateway
reads. Imports nothing heavy (a test enforces it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from ledger.config import LedgerConfig, Section, TelemetryConfig

RECORD_QUEUE = 10000  # turns held in memory for the ledger, by default


class GatewayConfig(Section):
    host: str = "127.0.0.1"
    """Address to bind. With no API keys configured the gateway refuses anything but loopback."""
    port: int = 8000
    """Port to bind."""
    upstreams: list[str] = Field(default_factory=list)
    """Base URLs of OpenAI-compatible replicas (vLLM in production), e.g. http://host:8001/v1."""
    model: str = "rlgw"
    """The public model name clients use; versions serve behind it."""
    base_model: str | None = None
    """The upstream's own name for the base model (None: asked from the first healthy replica)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Requests with a larger body get 413."""
    max_n: int = 16
    """Largest `n` a client may ask for."""
    max_tokens_limit: int = 32768
    """Largest `max_tokens` / `max_completion_tokens` a client may ask for."""
    connect_timeout_s: float = 2.0
    """Time to open a connection to a replica before trying another one."""
    request_timeout_s: float = 120.0
    """Time a replica may take for a whole reply (504 after it)."""
    health_interval_s: float = 2.0
    """How often replicas are probed; a failed probe marks a replica unhealthy until one succeeds."""
    record_queue: int = RECORD_QUEUE
    """Turns held in memory waiting for the ledger; past it they spill to the disk spool."""
    expose_upstreams: bool = False
    """Show replica URLs on /metrics (as the `replica` label) and /readyz to every caller. False:
    /metrics numbers the replicas and /readyz shows their URLs only to an admin key."""
    keys_file: Path | None = None
    """Hashed API keys (written by `rlgw keys create`). Default: <data_dir>/keys.json."""
    exploration_share: float = 0.0
    """Share of eligible requests answered with k completions recorded as a group (0: off)."""
    exploration_k: int = 4
    """Completions per exploration group."""
    exploration_tasks: list[str] | None = None
    """Tasks eligible for exploration groups: those whose rubrics need no user feedback (the
    alternatives never reach a user). None: every task."""


class VersionsConfig(Section):
    control: bool = True
    """This gateway loads versions into the pool and makes canary decisions. With several
    gateways, exactly one controls; the others (False) follow its events on the versions topic."""
    canary_share: float = 0.2
    """Share of new episodes sent to a canary version."""
    min_episodes: int = 30
    """Scored episodes a canary and its parent each need before a decision."""
    margin: float = 0.0
    """The canary must beat its parent's reward by this much (lower confidence bound)."""
    confidence: float = 0.9
    """Confidence level of the reward interval used for decisions."""
    max_error_rate: float = 0.05
    """A canary with a higher error rate is rolled back."""
    max_canary_episodes: int = 300
    """A canary still undecided after this many scored episodes is retired as inconclusive,
    so newer versions waiting behind it get their turn."""
    max_latency_ratio: float = 2.0
    """A canary whose p50 latency exceeds its parent's by this factor is rolled back."""
    alarm_sigmas: float = 4.0
    """A canary's side metric (zero-weight rubric metrics, answer length, tool-call errors,
    questions back, refusals, surprisal) shifted from its parent's raises an alarm
    (gateway/drift.py): a confidence sequence, looked at every tick, whose false-alarm rate over
    all looks is that of one two-sided test at this many standard errors (docs/versions.md)."""
    alarm_min_samples: int = 30
    """Values each side needs before a side metric is compared."""
    block_promotion_on: list[str] = Field(default_factory=list)
    """Metrics whose alarm keeps a canary from automatic promotion even when its reward rose
    (e.g. ["tool_call_error", "question_back"]; "judge:<rubric>/<function>" or "judge:*": a
    judge's probe drift, gateway/judge_alarms.py; ["*"]: any alarm). Empty: alarms only report —
    a trained version drifts on purpose (surprisal falls as it learns)."""
    full_weights: Literal["in_place", "rolling"] = "in_place"
    """How a full-weight version reaches the pool (docs/full-weights.md): in_place reloads a
    drained replica through vLLM's reload_weights (replicas run with VLLM_SERVER_DEV_MODE=1,
    two or more of them); rolling starts replicas on the new weights and stops the old ones."""
    follower_drain_s: float = 0.0
    """With following gateways in front of a full-weight pool: the longest a swap waits, after
    telling every gateway a replica is draining, for their requests on it to end — it goes on as
    soon as the replica reports none running or waiting for a second (vLLM's /metrics); an
    engine that does not report them waits all of it. Their versions feed's delay plus their
    longest request; 0: this gateway alone sends it requests (docs/full-weights.md)."""
    eval_gate: bool | None = None
    """Evaluate each registered version on held-out prompts against its parent before it gets
    any live traffic; one found worse is never canaried (docs/versions.md, "The eval gate").
    None: on in `rlgw up` when rubrics are configured (the stack runs the evaluation); a gateway
    started on its own gates only when True, with an `rlgw eval-worker` running."""
    eval_prompts: int = 16
    """Held-out prompts an evaluation replays (the newest ones)."""
    eval_margin: float = 0.0
    """A version is stopped when its held-out reward is below its parent's by more than this,
    with the evaluation's confidence (the paired interval at `confidence`)."""
    eval_max_tokens: int | None = 64
    """Cap on each evaluation answer's length (None: the prompt's own max_tokens)."""
    eval_concurrency: int = 2
    """Evaluation requests this gateway serves at once, at most."""
    eval_live_limit: int = 8
    """An evaluation request starts only while fewer live requests than this per healthy
    replica are in flight; otherwise it waits (up to `gateway.request_timeout_s`, then 503).
    1 (with eval_concurrency 1): evaluate only between live requests, the least interference
    on a compute-bound (CPU) engine (docs/versions.md, "Evaluation traffic and spare capacity")."""
    eval_yield: bool = True
    """Evaluation requests yield to live traffic: one starts only on a replica with no live
    request in flight, and is cancelled upstream (and sent again, the same body, when a replica
    is idle) when a live request is routed to its replica (docs/versions.md, "Evaluation
    traffic and spare capacity"). False: the spare-capacity rule alone."""
    eval_max_preemptions: int = 3
    """The starvation bound: an evaluation request pre-empted this many times runs anyway,
    under the spare-capacity rule alone, and is not pre-empted again."""
    eval_yield_deadline_s: float = 30.0
    """The starvation bound: an evaluation request that arrived longer ago than this runs
    anyway, as after `eval_max_preemptions`."""
    base_weights: str | None = None
    """The base model's folder, to bring replicas back to the base weights (default: the base
    model's served name, when that is a folder, as vLLM names a model by its path)."""


class GatewaySettings(Protocol):
    """What a gateway reads of the assembled config (`rlgw.config.Settings` has it)."""

    data_dir: Path
    gateway: GatewayConfig
    versions: VersionsConfig
    ledger: LedgerConfig
    telemetry: TelemetryConfig

    @property
    def keys_path(self) -> Path: ...
