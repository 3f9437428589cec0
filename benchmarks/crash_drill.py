"""Crash drill: SIGKILL the gateway 0, 20 or 100 ms after a reply, in both ack modes, and count
what the replies acknowledged against what the ledger holds afterwards.

Per trial: a fresh data dir, `rlgw gateway` on the embedded log (store off) in front of a fake
replica process, `--clients` threads sending chat requests back to back (one episode each,
keeping the X-Turn-Id of every reply read to its end; half the clients stream, a stream
counting once its [DONE] is read). Once traffic runs (100 replies and 1 s in), the next reply
a client reads arms the killer: `delay` ms later the gateway gets SIGKILL. The gateway is then
started again on the same data dir (it drains the spool its predecessor left), stopped with
SIGTERM, and the log is read back.

    acknowledged  replies the clients read in full before the kill
    recorded      of those, turns found in the log
    lost          acknowledged, not found (the figure durable mode must hold at 0)
    duplicated    extra copies of any turn in the log
    last100       acknowledged in the last 100 ms before the kill (the turns most at risk)

    python benchmarks/crash_drill.py [--modes async,durable] [--delays 0,20,100] [--trials 1] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ledger.localbus import LocalBus
from ledger.records import Turn, parse_record
from rlgw.stack import free_port

RLGW = str(Path(sys.executable).with_name("rlgw"))


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def gateway(data: Path, upstream: str, ack: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {"RLGW_LEDGER__BUS": "local", "RLGW_LEDGER__STORE": "memory", "RLGW_LEDGER__ACK": ack}
    cmd = [RLGW, "gateway", "--port", str(port), "--data-dir", str(data), "--upstream", upstream]
    proc = start(cmd, data.parent / f"gateway-{port}.log", env)
    root = f"http://127.0.0.1:{port}"
    wait_ready(root + "/readyz", proc)
    return proc, root


def queue_length(root: str) -> float:
    for line in httpx.get(root + "/metrics", timeout=5).text.splitlines():
        if line.startswith("rlgw_record_queue "):
            return float(line.split()[1])
    return float("nan")


@dataclass
class Clients:
    root: str
    count: int
    warmup_s: float = 1.0
    warmup_replies: int = 100  # traffic is flowing, not starting, when the killer is armed
    acked: list[tuple[float, str]] = field(default_factory=list)  # (time read, turn id)
    armed: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        self.t0 = time.monotonic()
        threads = [  # half the clients stream
            threading.Thread(target=self._client, args=(i % 2 == 1,), daemon=True) for i in range(self.count)
        ]
        for t in threads:
            t.start()
        return threads

    def _client(self, stream: bool) -> None:
        body = {"model": "rlgw", "messages": [{"role": "user", "content": "crash drill"}], "max_tokens": 16}
        body["stream"] = stream
        with httpx.Client(base_url=self.root + "/v1", timeout=10) as c:
            while not self.stop.is_set():
                try:
                    headers = {"X-Episode-Id": uuid.uuid4().hex}
                    with c.stream("POST", "/chat/completions", json=body, headers=headers) as r:
                        text = r.read()
                except httpx.HTTPError:
                    continue  # the gateway is gone: nothing acknowledged
                if stream and not text.rstrip().endswith(b"data: [DONE]"):
                    continue  # a stream is acknowledged by its [DONE]
                if r.status_code == 200:
                    now = time.monotonic()
                    self.acked.append((now, r.headers["x-turn-id"]))
                    if now - self.t0 > self.warmup_s and len(self.acked) >= self.warmup_replies:
                        self.armed.set()


def log_turns(data: Path) -> list[str]:
    bus = LocalBus(data / "ledger" / "log.sqlite")
    try:
        consumer = bus.consumer(["rlgw.turns"], f"drill-{uuid.uuid4().hex[:6]}")
        ids: list[str] = []
        while batch := consumer.poll(5000, timeout_s=0.2):
            ids.extend(r.id for m in batch if isinstance(r := parse_record(m.value), Turn))
        return ids
    finally:
        bus.close()


def trial(work: Path, upstream: str, ack: str, delay_ms: float, clients: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix=f"{ack}-{delay_ms:g}ms-", dir=work)) / "data"
    proc, root = gateway(data, upstream, ack)
    load = Clients(root, clients)
    threads = load.run()
    load.armed.wait(30)
    time.sleep(delay_ms / 1000)
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    load.stop.set()
    for t in threads:
        t.join(15)
    acked = [tid for at, tid in load.acked if at <= killed_at]
    last = {tid for at, tid in load.acked if killed_at - 0.1 <= at <= killed_at}
    again, root = gateway(data, upstream, ack)  # drains what its predecessor spooled
    deadline = time.monotonic() + 60
    while queue_length(root) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    again.send_signal(signal.SIGTERM)
    again.wait(30)
    found = log_turns(data)
    copies = Counter(found)
    missing = set(acked) - set(found)
    return {
        "acknowledged": len(acked),
        "recorded": len(set(acked) & set(found)),
        "lost": len(missing),
        "duplicated": sum(n - 1 for n in copies.values()),
        "last100": len(last),
        "last100_lost": len(last & missing),
        "exit_after_sigterm": again.returncode,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="async,durable")
    ap.add_argument("--delays", default="0,20,100", help="ms between a reply and the SIGKILL")
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlgw-crash-drill-"))
    port = free_port()
    replica = start(
        [sys.executable, "-m", "gateway.fake_upstream", "--port", str(port)], work / "replica.log"
    )
    upstream = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        wait_ready(upstream + "/models", replica)
        print(
            f"{'ack':<9}{'kill after':>11}{'acknowledged':>14}{'recorded':>10}{'lost':>6}"
            f"{'duplicated':>12}{'last100 lost':>14}"
        )
        for ack in a.modes.split(","):
            for delay in (float(d) for d in a.delays.split(",")):
                for _ in range(a.trials):
                    r = trial(work, upstream, ack, delay, a.clients)
                    rows.append({"ack": ack, "delay_ms": delay, **r})
                    print(
                        f"{ack:<9}{delay:>9g}ms{r['acknowledged']:>14}{r['recorded']:>10}{r['lost']:>6}"
                        f"{r['duplicated']:>12}{r['last100_lost']:>8}/{r['last100']:<5}",
                        flush=True,
                    )
    finally:
        replica.terminate()
        replica.wait(10)
    if a.json is not None:
        a.json.write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
