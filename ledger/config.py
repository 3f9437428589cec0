"""The ledger's config sections (`[ledger]`, `[telemetry]`) and the base every section shares.

Each package owns its own section in its own module (gateway/config.py, rewards/config.py,
learner/config.py); `rlgw/config.py` assembles them into the one `Settings` tree, loaded from
defaults, a TOML file and `RLGW_*` env vars. This module imports nothing heavy (a test enforces
it), so every entry point can parse config before it imports torch or vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_DATA_DIR = Path(".rlgw")


class Section(BaseModel):
    """A config section: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


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
    ack: Literal["async", "durable"] = "async"
    """When a reply may be sent: "async" at once (a crash loses the records still in memory, up
    to about `record_linger_ms` of traffic), "durable" once the disk spool's group commit holds
    its records (one fsync shared by the requests of a window; nothing acknowledged is lost on a
    crash). See docs/faults.md."""
    ack_timeout_s: float = 10.0
    """Durable acks: a reply whose records the disk does not take in this time is answered 503
    (the turn may still be recorded once the disk takes it)."""
    memory_limit_bytes: int = 256 * 1024 * 1024
    """Records held in memory while the disk refuses writes (full, failing, read-only); past it
    the gateway answers new requests 503 instead of acknowledging what it cannot keep."""
    local_partitions: int = 1
    """Partitions per topic of the embedded log (records go by key hash, so an episode stays ordered)."""
    local_synchronous: Literal["full", "normal"] = "full"
    """SQLite synchronous mode of the embedded log: full survives power loss, normal a process crash."""
    scrub_pii: bool = False
    """Replace emails, phone numbers and card numbers in recorded message contents with
    placeholders before records leave the gateway; scrubbed turns drop their token ids and
    log-probs (which would spell the original), so the learner skips them."""
    holdout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of episodes no version trains on (ledger/holdout.py): a hash of the episode id
    decides, the same in every process. The evaluation before a version's canary replays their
    prompts (docs/versions.md). 0: nothing is held out (and the evaluation has no prompts but a
    dataset's)."""
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

    @model_validator(mode="after")
    def _durable_needs_a_disk(self) -> LedgerConfig:
        if self.ack == "durable" and (self.bus == "memory" or self.spool_fsync == "never"):
            raise ValueError("ledger.ack = 'durable' needs a disk spool that fsyncs (bus local or kafka)")
        return self


class TelemetryConfig(Section):
    traces: Literal["none", "console", "otlp"] = "none"
    """OpenTelemetry span exporter."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP endpoint (traces = otlp)."""
    log_level: str = "INFO"
    """Python log level."""


class LedgerSettings(Protocol):
    """What the ledger's wiring reads of the assembled config (`rlgw.config.Settings` has it)."""

    data_dir: Path
    ledger: LedgerConfig
