"""The one config tree: defaults, then a TOML file (`--config`), then `RLGW_*` env vars.

Nested fields take a double underscore in env vars: `RLGW_GATEWAY__PORT=9000`,
`RLGW_LEDGER__BUS=kafka`. This module imports nothing heavy (a test enforces it), so every
entry point can parse config before it imports torch or vLLM.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path(".rlgw")
_TOML_FILE: ContextVar[Path | None] = ContextVar("rlgw_toml_file", default=None)


class Section(BaseModel):
    """A config section: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


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
    record_queue: int = 10000
    """Turns held in memory waiting for the ledger; past it they spill to the disk spool."""
    keys_file: Path | None = None
    """Hashed API keys (written by `rlgw keys create`). Default: <data_dir>/keys.json."""
    exploration_share: float = 0.0
    """Share of eligible requests answered with k completions recorded as a group (0: off)."""
    exploration_k: int = 4
    """Completions per exploration group."""
    exploration_tasks: list[str] | None = None
    """Tasks eligible for exploration groups: those whose rubrics need no user feedback (the
    alternatives never reach a user). None: every task."""


class LedgerConfig(Section):
    bus: Literal["local", "kafka", "memory"] = "local"
    """Where records go: the embedded durable log, Apache Kafka, or memory (tests)."""
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"])
    """Kafka brokers (bus = kafka)."""
    topic_prefix: str = "rlgw."
    """Prefix for every topic name."""
    partitions: int = 8
    """Partitions per topic created on start; rubric workers scale up to this many."""
    replication: int = 1
    """Replication factor for created topics (3 in production)."""
    store: Literal["embedded", "clickhouse", "memory"] = "embedded"
    """The query store: chdb in the data dir, a ClickHouse server, or memory (tests)."""
    dsn: str | None = None
    """ClickHouse DSN (store = clickhouse), e.g. http://default:@host:8123/rlgw."""
    spool_fsync: Literal["always", "batch", "never"] = "batch"
    """When the disk spool fsyncs: every record, once per appended batch, or never (the OS decides)."""
    spool_alarm_bytes: int = 256 * 1024 * 1024
    """Spool size that raises the alarm (metric + log)."""
    writer_batch: int = 20000
    """Store writer: rows per insert at most. Larger inserts are cheaper per row
    (benchmarks/ledger_throughput.py, chdb: 117k–145k rows/s at 20,000, 104k–121k at 5,000), and
    under light traffic `writer_linger_s` ends a batch long before it fills."""
    writer_linger_s: float = 1.0
    """Store writer: longest wait before a partial batch is inserted."""
    store_writer: bool | None = None
    """Run a store writer (bus -> store) inside this process. None: only with the embedded store."""
    database: str = "rlgw"
    """ClickHouse database holding the ledger's tables (created by the migrations)."""
    record_batch: int = 2000
    """Recorder: records per publish to the bus at most."""
    record_linger_ms: float = 10.0
    """Recorder: wait this long after a publish for the next batch to gather (one thread wake-up
    per batch instead of per record; measured by benchmarks/gateway_overhead.py)."""
    local_partitions: int = 1
    """Partitions per topic of the embedded log (records go by key hash, so an episode stays ordered)."""
    local_synchronous: Literal["full", "normal"] = "full"
    """SQLite synchronous mode of the embedded log: full survives power loss, normal a process crash."""
    scrub_pii: bool = False
    """Replace emails, phone numbers and card numbers in recorded message contents with
    placeholders before records leave the gateway; scrubbed turns drop their token ids and
    log-probs (which would spell the original), so the learner skips them."""
    linger_ms: int = 20
    """Kafka producer: wait this long to fill a batch (chosen by benchmarks/ledger_throughput.py)."""
    batch_bytes: int = 512 * 1024
    """Kafka producer: bytes per partition batch at most."""
    max_record_bytes: int = 16 * 1024 * 1024
    """Kafka: the largest record sent: the producer's max_request_size and `max.message.bytes`
    of the topics it creates (Apache Kafka's broker default is 1 MiB, while a turn carries its
    whole request, up to gateway.max_body_bytes, and its token ids). A record the bus refuses
    for good is set aside in <spool>/rejected/ and announced on the dead-letter topic."""
    compression: Literal["none", "gzip", "lz4"] = "lz4"
    """Kafka producer compression (lz4: cheapest CPU for JSON records, measured)."""
    request_timeout_ms: int = 5000
    """Kafka: a request (and the producer's wait for metadata) fails after this long."""
    publish_timeout_ms: int = 10000
    """Kafka: a publish not acknowledged in this time fails; the recorder spools and retries."""
    session_timeout_ms: int = 10000
    """Kafka consumer group session timeout (a dead member's partitions move after it)."""
    heartbeat_interval_ms: int = 1000
    """Kafka consumer heartbeat interval (about a tenth of the session timeout)."""


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
    """OpenAI-compatible endpoint for LLM-judge scorers (None: the gateway's own pool)."""
    judge_model: str | None = None
    """Model name for the judge."""
    group: str = "rlgw-rubrics"
    """Consumer group of the rubric workers: workers in one group share the partitions."""
    keep_scored_s: float = 3600.0
    """A scored episode stays in a worker's memory this long, so late feedback re-scores it."""
    commit_interval_s: float = 30.0
    """Offsets of open episodes' records are committed at most this late; an episode open across
    a crash is then rebuilt from the store (when the worker has one) or scored on what follows."""


class LearnerConfig(Section):
    model: str | None = None
    """Base model: a local HF folder (None in `rlgw demo`: a built-in tiny model)."""
    full_finetune: bool = False
    """Train all weights instead of a LoRA adapter."""
    lora_rank: int = 8
    """LoRA rank."""
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Modules LoRA adapts (tiny random models also need lm_head to learn)."""
    lr: float = 1e-4
    """AdamW learning rate."""
    batch_episodes: int = 32
    """Scored episodes per training step."""
    steps_per_version: int = 4
    """Optimizer steps between published versions."""
    clip: float = 2.0
    """Importance weights are truncated at this value."""
    kl_coef: float = 0.05
    """Weight of the KL penalty to the base model (0: off). The defaults of this section are for a
    pretrained model; the built-in tiny random model runs with KL and the guards off
    (learner.tiny_model.TINY_LEARNER)."""
    max_kl_base: float = 0.5
    """A version whose mean KL to the base model exceeds this (nats per loss token) is held back,
    never published (learner/stats.py). 0: no limit."""
    max_entropy_rise: float = 1.0
    """A version whose mean entropy exceeds the base model's on the same tokens by more than this
    (nats) is held back, never published (learner/stats.py). 0: no limit."""
    max_staleness: int = 4
    """Samples served more than this many versions ago are skipped."""
    device: str = "auto"
    """auto | cpu | cuda."""
    cpu_threads: int = 0
    """Torch threads when training on the CPU (0: torch's default). Beside a vLLM-CPU engine on
    the same machine, 1 keeps training off the engine's core (the embedded stack sets it)."""
    logprob_chunk: int = 1024
    """Tokens per chunk when computing log-probs over the LM head."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm (0: off)."""
    micro_batch_tokens: int = 8192
    """Tokens packed into one forward pass (no padding); a step accumulates several. Memory grows
    linearly with it (varlen attention, no (T, T) mask) by the activations the backward keeps,
    estimated from the layer shapes (not measured) at ~1.8 MB a token for Qwen3-0.6B in bf16
    (14 GB at 8192) and ~6.5 MB for a 7B (53 GB): 8192 is near the limit of an 80 GB GPU for a
    7B. A larger row gains little: what a forward costs besides its matmuls (kernel launches,
    reading the weights) is already small next to 8192 tokens' worth of them."""
    max_sample_tokens: int = 4096
    """Samples longer than this are skipped (counted)."""
    baseline_alpha: float = 0.1
    """Step size of the running reward baseline per (rubric, task key)."""
    base_version: str = "base"
    """The version id the gateway gives the base model: samples it served have age = versions since."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Training dtype of the base weights (auto: bfloat16 on CUDA, float32 on CPU)."""
    checkpoint_dir: Path | None = None
    """Where versions are saved. Default: <data_dir>/learner."""
    keep_versions: int = 0
    """Complete versions kept on disk (0: all; the serving pool may still load old ones)."""
    poll_interval_s: float = 2.0
    """Wait between reads when there are too few new scored episodes for a step."""
    admin_url: str | None = None
    """Gateway base URL for publishing versions (POST {admin_url}/admin/versions)."""
    admin_key: str | None = None
    """Admin bearer key for the gateway's admin API."""
    publish_retries: int = 5
    """Attempts to publish a version when the gateway answers with a transient error."""


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


class TelemetryConfig(Section):
    traces: Literal["none", "console", "otlp"] = "none"
    """OpenTelemetry span exporter."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP endpoint (traces = otlp)."""
    log_level: str = "INFO"
    """Python log level."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RLGW_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = DEFAULT_DATA_DIR
    """Holds the local log, the spool, the embedded store, keys, checkpoints."""
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    versions: VersionsConfig = Field(default_factory=VersionsConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.ledger.store == "clickhouse" and not self.ledger.dsn:
            raise ValueError("ledger.store = 'clickhouse' needs ledger.dsn")
        if not 0.0 <= self.versions.canary_share <= 1.0:
            raise ValueError("versions.canary_share must be within [0, 1]")
        if not 0.0 <= self.gateway.exploration_share <= 1.0:
            raise ValueError("gateway.exploration_share must be within [0, 1]")
        return self

    @property
    def keys_path(self) -> Path:
        return self.gateway.keys_file or self.data_dir / "keys.json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _TOML_FILE.get() or os.environ.get("RLGW_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file (`config`, else $RLGW_CONFIG) < RLGW_* env vars < overrides (CLI flags)."""
    if config is not None and not config.is_file():
        raise FileNotFoundError(f"config file not found: {config}")
    token = _TOML_FILE.set(config)
    try:
        return Settings(**_nest(overrides))
    finally:
        _TOML_FILE.reset(token)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'gateway.port': 1} -> {'gateway': {'port': 1}}; None values are dropped."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
