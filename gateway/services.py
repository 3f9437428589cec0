"""The gateway's services over its pool, recorder and keys: what the routes call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.auth import KeyStore
from gateway.chat import ChatService
from gateway.config import GatewaySettings
from gateway.controller import VersionController
from gateway.conversations import Conversations
from gateway.drift import AlarmGauge
from gateway.explore import Exploration
from gateway.feedback import FeedbackService
from gateway.metrics import Metrics
from gateway.pool import Pool
from gateway.routing import Router
from gateway.sessions import Sessions
from gateway.turns import TurnWriter
from gateway.version_log import VersionLog
from gateway.versions import VersionRegistry
from ledger.bus import Bus
from ledger.recorder import Recorder
from ledger.records import Episode


class EpisodeReader(Protocol):
    """What the gateway reads from the store (the ledger's store implements it)."""

    def episode(self, episode_id: str, tenant: str | None = None) -> Episode | None: ...

    def episodes(self, since: float | None = None, limit: int = 100) -> Sequence[Episode]:
        """The newest episodes first (the eval gate's held-out prompts: ledger/holdout.py)."""
        ...


@dataclass
class Services:
    settings: GatewaySettings
    pool: Pool
    recorder: Recorder
    keys: KeyStore
    metrics: Metrics = field(default_factory=Metrics)
    store: EpisodeReader | None = None
    bus: Bus | None = None  # where live scores are read from (for canary decisions)
    loop: asyncio.AbstractEventLoop | None = None  # the server's loop, once it runs
    versions: VersionRegistry = field(init=False)
    controller: VersionController = field(init=False)
    turns: TurnWriter = field(init=False)
    chat: ChatService = field(init=False)
    feedback: FeedbackService = field(init=False)
    sessions: Sessions = field(init=False)
    conversations: Conversations = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.settings.gateway
        self.versions = VersionRegistry(
            self.settings.versions,
            self.recorder,
            lambda: cfg.base_model or self.pool.base_model(),
            VersionLog(self.bus, self.recorder, self.settings.ledger.topic_prefix),
        )
        self.controller = VersionController(self.versions, self.pool)
        self.metrics.registry.register(AlarmGauge(self.versions))
        router: Router = self.versions
        self.turns = TurnWriter(self.recorder, cfg.model, scrub_pii=self.settings.ledger.scrub_pii)
        self.chat = ChatService(
            self.pool,
            router,
            self.turns,
            self.metrics,
            max_n=cfg.max_n,
            max_tokens=cfg.max_tokens_limit,
            on_request=self.versions.observe_request,
            explore=Exploration(cfg.exploration_share, cfg.exploration_k, cfg.exploration_tasks),
        )
        self.feedback = FeedbackService(
            self.turns.index, self.recorder, scrub_pii=self.settings.ledger.scrub_pii
        )
        self.sessions = Sessions(self.keys)
        self.conversations = Conversations(self.store)
