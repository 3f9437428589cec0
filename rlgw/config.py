"""The one config tree: every package's section, assembled. Defaults, then a TOML file
(`--config`), then `RLGW_*` env vars, then CLI flags.

Nested fields take a double underscore in env vars: `RLGW_GATEWAY__PORT=9000`,
`RLGW_LEDGER__BUS=kafka`. Each section is documented in its package's config module. This
module imports nothing heavy (a test enforces it), so every entry point can parse config
before it imports torch or vLLM.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.config import GatewayConfig, VersionsConfig
from learner.config import LearnerConfig
from ledger.config import DEFAULT_DATA_DIR, LedgerConfig, TelemetryConfig
from rewards.config import RewardsConfig

_TOML_FILE: ContextVar[Path | None] = ContextVar("rlgw_toml_file", default=None)


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
