"""deploy/: every shipped file parses, and what the manifests point at exists.

Checked: TOMLs load as the config tree, YAMLs and the Grafana JSON parse; config files and
rubrics the compose file and the Kubernetes ConfigMaps mount exist and load; every `rlgw
<command>` a manifest runs is a command of the CLI (or one in PENDING_COMMANDS, see there);
images are named; Kafka keeps 3 copies with min.insync.replicas 2; the topology has at least two
gateways, vLLM replicas and rubric workers; the dashboard's metrics are defined in the code.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from rewards.loader import load_rubrics
from rlgw.cli import app
from rlgw.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
SCALE_OUT = DEPLOY / "config" / "scale-out.toml"

# Commands the manifests may run before `rlgw --help` lists them (work landing in parallel).
# Empty now: rubric-worker, store-writer and learner have landed. Add a name only while its
# command is being written, and remove it once it ships.
PENDING_COMMANDS: set[str] = set()


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every Deployment/StatefulSet/Job container."""
    out = []
    for d in k8s_docs():
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            out += [(d, c) for c in d["spec"]["template"]["spec"]["containers"]]
    return out


def rlgw_command(tokens: list[str]) -> str | None:
    """The subcommand after `rlgw` in an entrypoint + command line."""
    tokens = [str(t) for t in tokens]
    if "rlgw" in tokens:
        return tokens[tokens.index("rlgw") + 1]
    return None


def compose_argv(service: dict[str, Any]) -> list[str]:
    default = ["tini", "--", "rlgw"] if service["image"].startswith("rl-gateway") else []
    entry = service.get("entrypoint") or default  # the rl-gateway image's entrypoint is rlgw
    command = service.get("command", [])
    return [*entry, *(command if isinstance(command, list) else command.split())]


def k8s_argv(container: dict[str, Any]) -> list[str]:
    default = ["tini", "--", "rlgw"] if container["image"].startswith("rl-gateway") else []
    return [*container.get("command", default), *container.get("args", [])]


def test_every_file_parses() -> None:
    tomls = sorted(DEPLOY.rglob("*.toml"))
    assert SCALE_OUT in tomls
    for f in tomls:
        assert isinstance(load_settings(f), Settings), f
    yamls = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(yamls) >= 10
    for f in yamls:
        assert list(yaml.safe_load_all(f.read_text())), f
    for f in sorted(DEPLOY.rglob("*.json")):
        assert json.loads(f.read_text()), f


def test_compose_mounts_resolve() -> None:
    doc = compose()
    for name, cfg in doc["configs"].items():
        if "file" in cfg:
            path = (COMPOSE.parent / cfg["file"]).resolve()
            assert path.is_file(), f"config {name}: {path}"
            if path.suffix == ".toml":
                assert path.parent == DEPLOY / "config"
                load_settings(path)
        else:  # inline rubrics: load them as the workers will
            assert load_rubrics(_tmp_toml(cfg["content"])), name
    for name, service in doc["services"].items():
        for c in service.get("configs", []):
            assert c["source"] in doc["configs"], f"{name} mounts unknown config {c['source']}"
        for s in service.get("secrets", []):
            assert s["source"] in doc["secrets"], f"{name} mounts unknown secret {s['source']}"
        for v in service.get("volumes", []):
            host = v.split(":")[0]
            if host.startswith("."):  # a bind mount of a shipped file
                assert (COMPOSE.parent / host).exists(), f"{name} mounts missing {host}"
            elif not host.startswith("${"):
                assert host in doc["volumes"], f"{name} uses undeclared volume {host}"
    build = doc["x-rlgw"]["build"]
    dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == DEPLOY / "Dockerfile"
    assert "EXTRAS=gpu" in dockerfile.read_text()


def _tmp_toml(text: str) -> Path:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    return Path(f.name)


def test_k8s_references_resolve() -> None:
    docs = k8s_docs()
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rlgw-config")
    assert config["data"]["config.toml"] == SCALE_OUT.read_text(), (
        "deploy/k8s/config.yaml must hold a verbatim copy of deploy/config/scale-out.toml"
    )
    rubrics = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rlgw-rubrics")
    assert load_rubrics(_tmp_toml(rubrics["data"]["rubrics.toml"]))
    for workload, _ in k8s_containers():
        for vol in workload["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in vol:
                assert ("ConfigMap", vol["configMap"]["name"]) in names
            if "secret" in vol:
                assert ("Secret", vol["secret"]["secretName"]) in names
            if "persistentVolumeClaim" in vol:
                assert ("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]) in names
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {f.name for f in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}


def test_manifests_run_known_commands() -> None:
    group = typer.main.get_command(app)
    known = set(group.list_commands(None)) | PENDING_COMMANDS  # type: ignore[attr-defined]
    used = {rlgw_command(compose_argv(s)) for s in compose()["services"].values()}
    used |= {rlgw_command(k8s_argv(c)) for _, c in k8s_containers()}
    used.discard(None)
    assert used >= {"gateway", "rubric-worker", "learner", "store-writer"}
    assert used <= known, f"unknown rlgw commands: {used - known}"
    for _, c in k8s_containers():
        argv = k8s_argv(c)
        if "rlgw" in argv:
            assert argv[-2:] == ["--config", "/etc/rlgw/config.toml"], c["name"]
    argvs = [compose_argv(s) for s in compose()["services"].values()]
    argvs += [k8s_argv(c) for _, c in k8s_containers()]
    for argv in argvs:  # every option a manifest passes is one its command takes
        name = rlgw_command(argv)
        if name in known - PENDING_COMMANDS:
            args = [str(t) for t in argv[argv.index("rlgw") + 2 :]]
            group.get_command(None, name).make_context(name, args)  # type: ignore[attr-defined]


def test_images_named() -> None:
    images = {s["image"].split(":")[0] for s in compose()["services"].values()}
    images |= {c["image"].split(":")[0] for _, c in k8s_containers()}
    assert {"apache/kafka", "clickhouse/clickhouse-server", "vllm/vllm-openai", "rl-gateway"} <= images
    for _, c in k8s_containers():
        assert ":" in c["image"], c["name"]


def _env(items: Any) -> dict[str, str]:
    if isinstance(items, dict):
        return {k: str(v) for k, v in items.items()}
    return {e["name"]: str(e["value"]) for e in items if "value" in e}


def test_kafka_durability() -> None:
    brokers = {n: s for n, s in compose()["services"].items() if s["image"].startswith("apache/kafka")}
    assert len(brokers) == 3
    for s in brokers.values():
        env = _env(s["environment"])
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
    (sts, kafka), *_ = [(w, c) for w, c in k8s_containers() if c["image"].startswith("apache/kafka")]
    env = _env(kafka["env"])
    assert sts["spec"]["replicas"] == 3
    assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    s = load_settings(SCALE_OUT)
    assert s.ledger.bus == "kafka" and s.ledger.replication == 3 and len(s.ledger.bootstrap_servers) == 3
    aliases = {a for svc in brokers.values() for a in svc["networks"]["default"]["aliases"]}
    assert {b.split(":")[0] for b in s.ledger.bootstrap_servers} <= aliases


def _roles(doc: dict[str, Any]) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {}
    for name, s in doc["services"].items():
        role = "vllm" if s["image"].startswith("vllm/") else rlgw_command(compose_argv(s)) or "other"
        roles.setdefault(role, []).append(name)
    return roles


def test_topology() -> None:
    doc = compose()
    roles = _roles(doc)
    assert len(roles["gateway"]) >= 2 and len(roles["vllm"]) >= 2 and len(roles["rubric-worker"]) >= 2
    assert len(roles["store-writer"]) == 1 and len(roles["learner"]) == 1
    settings = load_settings(SCALE_OUT)
    vllm_aliases = {a for n in roles["vllm"] for a in doc["services"][n]["networks"]["default"]["aliases"]}
    assert {re.sub(r"^http://([^:/]+).*", r"\1", u) for u in settings.gateway.upstreams} <= vllm_aliases
    nginx = (COMPOSE.parent / "nginx.conf").read_text()
    for gw in roles["gateway"]:
        assert f"server {gw}:8000" in nginx
    controlling = [
        n
        for n in roles["gateway"]
        if _env(doc["services"][n]["environment"]).get("RLGW_VERSIONS__CONTROL", "true") == "true"
    ]
    assert controlling == ["gateway-a"]  # exactly one decides; the others follow its version events
    for n in roles["vllm"]:
        s = doc["services"][n]
        assert s["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        _check_vllm_args(s["command"], settings)
        assert "adapters:/adapters:ro" in s["volumes"]
    learner = doc["services"][roles["learner"][0]]
    gpus = learner["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
    assert f"--nproc-per-node={len(gpus)}" in learner["command"] and "torchrun" in learner["entrypoint"]


def _check_vllm_args(args: list[str], settings: Settings) -> None:
    assert "--enable-lora" in args
    flags = dict(a.split("=", 1) for a in args if "=" in a)
    assert int(flags["--max-lora-rank"]) >= settings.learner.lora_rank and int(flags["--max-loras"]) >= 2
    assert flags["--logprobs-mode"] == "processed_logprobs"  # the behaviour policy (docs/vllm.md)
    assert flags["--generation-config"] == "vllm"  # absent fields mean what ledger.sampling records


def test_k8s_topology() -> None:
    docs = k8s_docs()
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    settings = load_settings(SCALE_OUT)
    assert by[("Deployment", "gateway")]["spec"]["replicas"] >= 2
    assert by[("HorizontalPodAutoscaler", "gateway")]["spec"]["minReplicas"] >= 2
    assert by[("Deployment", "gateway-control")]["spec"]["replicas"] == 1
    for name, control in (("gateway", "false"), ("gateway-control", None)):
        (gw,) = by[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert _env(gw.get("env", [])).get("RLGW_VERSIONS__CONTROL") == control
    assert by[("Deployment", "rubric-worker")]["spec"]["replicas"] >= 2
    assert (
        by[("HorizontalPodAutoscaler", "rubric-worker")]["spec"]["maxReplicas"] <= settings.ledger.partitions
    )
    vllm = by[("StatefulSet", "vllm")]
    assert vllm["spec"]["replicas"] >= len(settings.gateway.upstreams) >= 2
    (container,) = vllm["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _env(container["env"])["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    _check_vllm_args(container["args"], settings)
    assert by[("PersistentVolumeClaim", "rlgw-adapters")]["spec"]["accessModes"] == ["ReadWriteMany"]
    (learner,) = by[("StatefulSet", "learner")]["spec"]["template"]["spec"]["containers"]
    gpus = learner["resources"]["limits"]["nvidia.com/gpu"]
    assert learner["command"][-1] == "torchrun" and f"--nproc-per-node={gpus}" in learner["args"]
    assert settings.learner.checkpoint_dir is not None
    assert {"mountPath": str(settings.learner.checkpoint_dir), "name": "adapters"} in learner["volumeMounts"]


DASHBOARD_METRICS = {
    "rlgw_requests_total",
    "rlgw_request_seconds",
    "rlgw_ttft_seconds",
    "rlgw_errors_total",
    "rlgw_record_queue",
    "rlgw_replica_healthy",
}


@pytest.mark.parametrize("path", sorted((DEPLOY / "grafana").glob("*.json")), ids=lambda p: p.name)
def test_dashboard_metrics_exist(path: Path) -> None:
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\brlgw_[a-z_]+", e)}
    assert all(any(u.startswith(m) for u in used) for m in DASHBOARD_METRICS)
    source = "".join(f.read_text() for pkg in ("gateway", "ledger", "rewards", "learner")
                     for f in (ROOT / pkg).rglob("*.py"))  # fmt: skip
    defined = set(re.findall(r'"(rlgw_[a-z_]+)"', source)) | {f"rlgw_learner_{g}" for g in _learner_gauges()}
    for metric in used:
        base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
        if base.startswith("rlgw_learner_") and importlib.util.find_spec("learner.metrics") is None:
            continue  # the learner's metrics module lands with the learner
        assert base in defined, f"{path.name} charts {metric}, which no code defines"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def _learner_gauges() -> tuple[str, ...]:
    if importlib.util.find_spec("learner.metrics") is None:
        return ()
    return tuple(importlib.import_module("learner.metrics").GAUGES)


def test_toml_example_sections_are_known() -> None:
    """Every section of the shipped config is one the tree declares (not only parseable)."""
    doc = tomllib.loads(SCALE_OUT.read_text())
    assert {k for k, v in doc.items() if isinstance(v, dict)} <= set(Settings.model_fields)
