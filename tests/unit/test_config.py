"""The config tree: sources in order, clear errors, shipped TOMLs parse, no heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlgw.cli import app
from rlgw.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[gateway]\nport = 9100\nmodel = "from-toml"\n[ledger]\npartitions = 3\n')
    monkeypatch.setenv("RLGW_GATEWAY__PORT", "9200")
    s = load_settings(toml, **{"ledger.partitions": 5})
    assert (s.gateway.port, s.gateway.model, s.ledger.partitions) == (9200, "from-toml", 5)
    assert load_settings().gateway.model == "rlgw"  # the file does not leak into later loads


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[ledger]\nstore = "clickhouse"\n')
    with pytest.raises(ValueError, match=r"needs ledger\.dsn"):
        load_settings(toml)
    toml.write_text("[gateway]\nportt = 1\n")
    with pytest.raises(ValueError, match="portt"):
        load_settings(toml)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_every_shipped_toml_parses() -> None:
    files = sorted((ROOT / "deploy").rglob("*.toml"))
    assert files, "deploy/ ships example configs"
    for f in files:
        assert isinstance(load_settings(f), Settings), f


def test_config_modules_import_nothing_heavy() -> None:
    heavy = "('torch', 'vllm', 'transformers', 'peft', 'fastapi', 'chdb', 'matplotlib')"
    modules = "ledger.config, gateway.config, rewards.config, learner.config, rlgw.config, rlgw.cli"
    code = f"import sys, {modules}; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_cli_config_show_and_keys(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show"], env={"RLGW_GATEWAY__MODEL": "m1"})
    assert shown.exit_code == 0 and '"model": "m1"' in shown.stdout
    made = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path)])
    assert made.exit_code == 0 and made.stdout.startswith("rlgw-")
    assert made.stdout.strip() not in (tmp_path / "keys.json").read_text()
    bad = runner.invoke(app, ["keys", "create", "--tenant", "a b", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2
