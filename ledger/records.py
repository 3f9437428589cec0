"""The records that flow through the ledger, and the Episode view that gathers them.

Every record carries `kind` (what it is) and `schema` (its schema version). Records are
append-only: a later record supersedes an earlier one (a re-score, a version event), it never
edits it. The Kafka key of every record is its episode id (versions: the version id), so one
episode stays ordered on one partition.

    Turn         one model call: request, response, token ids, behaviour log-probs, version
    FailedCall   a model call that failed without a turn: version, error, latency (no content)
    EpisodeEnd   the product (or an idle timeout) closed an episode
    Feedback     a later judgement about an episode or a turn: number, bool, comment, demo
    Score        a rubric's verdict on an episode: each function's value and the total
    ModelVersion one event in a model version's life: registered, canary, promoted, ...
    JudgeProbe   a scheduled run of a judge's probe set and whether it drifted (an alarm)
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ledger.ids import new_id
from ledger.sampling import Sampling

SCHEMA_VERSION = 1

TOPIC_TURNS = "turns"  # Turn, FailedCall and EpisodeEnd, keyed by episode
TOPIC_FEEDBACK = "feedback"
TOPIC_SCORES = "scores"  # Score (keyed by episode) and JudgeProbe (keyed by judge)
TOPIC_VERSIONS = "versions"
TOPIC_DEAD_LETTERS = "dead-letters"
TOPICS = (TOPIC_TURNS, TOPIC_FEEDBACK, TOPIC_SCORES, TOPIC_VERSIONS, TOPIC_DEAD_LETTERS)


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_: int = Field(default=SCHEMA_VERSION, alias="schema")
    id: str = Field(default_factory=new_id)
    created_at: float = Field(default_factory=time.time)
    tenant: str = "default"
    traceparent: str | None = None  # W3C trace context of the span that made it (ledger.tracing)

    @property
    def key(self) -> str:
        """The bus key: records with one key stay ordered on one partition."""
        return getattr(self, "episode_id", None) or self.id

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, by_alias=True)


class Encoded:
    """A record serialised where it was born, for the recorder (which needs only its key and
    bytes). The gateway builds each turn as plain data and writes it with orjson: building and
    dumping the pydantic model instead cost ~30 µs a turn, a sixth of the gateway's CPU per
    request. Readers parse it like any record (a test keeps the two in step)."""

    __slots__ = ("body", "key")

    def __init__(self, key: str, body: bytes) -> None:
        self.key, self.body = key, body

    def to_bytes(self) -> bytes:
        return self.body


class TurnChoice(BaseModel):
    """One completion of a turn (a turn has `n` of them)."""

    index: int = 0
    message: dict[str, Any] = Field(default_factory=dict)  # role, content, tool_calls, ...
    finish_reason: str | None = None
    token_ids: list[int] | None = None  # completion token ids, as served
    logprobs: list[float] | None = None  # log-prob of each token under the distribution it was drawn from


class Turn(Record):
    kind: Literal["turn"] = "turn"
    episode_id: str
    model: str  # the public model name the client asked for
    version: str  # the model version that served it
    upstream: str = ""  # the replica that served it
    started_at: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False
    request: dict[str, Any] = Field(default_factory=dict)  # messages, tools, sampling params
    sampling: Sampling | None = None  # the effective sampling parameters (None: recorded before them)
    choices: list[TurnChoice] = Field(default_factory=list)
    usage: dict[str, Any] | None = None
    prompt_token_ids: list[int] | None = None
    tokens_recorded: bool = False  # False: the upstream gave no token ids / log-probs
    task: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    group_id: str | None = None  # exploration group: k completions of one prompt
    status: int = 200
    error: str | None = None


class FailedCall(Record):
    """A model call that failed and left no turn (an upstream 5xx or timeout, no reachable
    replica, a reply that is not JSON): every gateway's turns feed counts it in its version's
    error rate (docs/versions.md). No request or reply content. Built as plain data on the
    request path, like a turn (`Encoded`)."""

    kind: Literal["failed_call"] = "failed_call"
    episode_id: str
    version: str  # the version the call was routed to
    error: str  # the error's code: upstream_error, upstream_timeout, no_healthy_replica, ...
    status: int = 502  # what the client got
    latency_ms: float = 0.0
    upstream: str = ""  # the replica that failed, when one answered
    stream: bool = False


class EpisodeEnd(Record):
    kind: Literal["episode_end"] = "episode_end"
    episode_id: str
    reason: str = "client"  # client | feedback | idle


FeedbackValue = float | bool | str | list[dict[str, Any]]


class Feedback(Record):
    kind: Literal["feedback"] = "feedback"
    episode_id: str
    turn_id: str | None = None
    name: str
    value: FeedbackValue
    done: bool = False  # the product says the episode is over


class Score(Record):
    kind: Literal["score"] = "score"
    episode_id: str
    rubric: str
    rubric_version: str
    total: float | None  # weighted total; None when every reward function failed
    values: dict[str, float | None] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)
    feedback_seq: int = 0  # how many feedback records the score saw: later ones supersede
    version: str | None = None  # the model version that served the episode
    task: str | None = None


VersionStatus = Literal[
    "registered",
    "loaded",
    "evaluating",
    "eval_failed",
    "canary",
    "serving",
    "retired",
    "rolled_back",
    "failed",
]


class ModelVersion(Record):
    kind: Literal["version"] = "version"
    version: str
    parent: str | None = None
    status: VersionStatus
    event: str = ""  # registered | loaded | canary | promoted | rolled_back | pinned | ...
    reason: str = ""
    figures: dict[str, Any] = Field(default_factory=dict)
    adapter_path: str | None = None
    weights_kind: Literal["lora", "full"] = "lora"  # full: adapter_path is a whole model folder
    data_window: dict[str, Any] = Field(default_factory=dict)  # ledger positions trained on
    pinned: bool = False

    @property
    def key(self) -> str:
        return self.version


class JudgeProbe(Record):
    """One scheduled run of a judge's probe set by a rubric worker (rewards/judge_watch.py): the
    rates of rewards/probes.py, the baseline they were compared with, and `drift`, the rates that
    moved beyond the limit. A run with drift is an alarm, and the newest run of a judge says
    whether it still holds (gateways show it and may block promotion: docs/versions.md)."""

    kind: Literal["judge_probe"] = "judge_probe"
    judge: str  # which judge: "<rubric>/<function>", or "config" for rewards.judge_url/model
    url: str
    model: str
    false_positive_rate: float
    control_pass_rate: float
    baseline: dict[str, float] = Field(default_factory=dict)  # the two rates it was compared with
    baseline_from: str = ""  # "file <path>" or "first run"
    max_drift: float = 0.1
    drift: list[str] = Field(default_factory=list)  # e.g. "false_positive_rate 0.00 -> 0.44"
    errors: int = 0  # probes and controls the judge gave no grade for

    @property
    def key(self) -> str:
        return "judge:" + self.judge  # one judge's runs stay in order


class DeadLetter(Record):
    kind: Literal["dead_letter"] = "dead_letter"
    topic: str
    reason: str
    payload: str  # the raw bytes, decoded with replacement (the first bytes, when `kept_in` is set)
    size: int | None = None  # bytes of the record, when the payload is cut short
    kept_in: str = ""  # a file holding the whole record (records the bus rejected)


RECORD_TYPES: dict[str, type[Record]] = {
    "turn": Turn,
    "failed_call": FailedCall,
    "episode_end": EpisodeEnd,
    "feedback": Feedback,
    "score": Score,
    "version": ModelVersion,
    "judge_probe": JudgeProbe,
    "dead_letter": DeadLetter,
}


class RecordError(ValueError):
    """Bytes on a topic that are not a record we know."""


def parse_record(data: bytes) -> Record:
    try:
        raw = orjson.loads(data)
        cls = RECORD_TYPES[raw["kind"]]
        return cls.model_validate(raw)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"unparseable record: {exc}"[:500]) from exc


class Episode(BaseModel):
    """Everything known about one episode: its turns in order, feedback, and scores."""

    episode_id: str
    tenant: str = "default"
    turns: list[Turn] = Field(default_factory=list)
    feedback: list[Feedback] = Field(default_factory=list)
    scores: list[Score] = Field(default_factory=list)
    ended: bool = False

    @property
    def current_scores(self) -> dict[str, Score]:
        """The newest score per rubric (re-scores supersede, all are kept)."""
        out: dict[str, Score] = {}
        for s in sorted(self.scores, key=lambda s: (s.feedback_seq, s.created_at)):
            out[s.rubric] = s
        return out
