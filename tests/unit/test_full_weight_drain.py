"""Draining a full-weight replica across several gateways (gateway/rollout.py): the controlling
gateway stops a retired replica only once the replica itself reports no request running or
waiting (every gateway's requests meet there), and a following gateway drops it from its pool
only once its own requests on it are done."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import VersionsConfig
from gateway.fake_upstream import BASE_MODEL, FakeState
from gateway.pool import Pool
from gateway.rollout import FullWeightRollout
from gateway.versions import VersionRegistry
from gateway.weights import FakeLauncher, engine_queue
from ledger.bus import MemoryBus
from ledger.published import PublishedVersion
from ledger.recorder import Recorder
from tests.fixtures.upstream import start_fake

VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="/models/smollm2"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="/models/smollm2"} 1.0
vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 7.0
"""


def test_a_replicas_queue_is_read_from_vllms_metrics() -> None:
    assert engine_queue(VLLM_METRICS) == 3
    assert engine_queue("# an engine without those gauges\nhttp_requests_total 4.0\n") is None


def gateway(url: str, base: str, follower_drain_s: float, drain_timeout_s: float = 300) -> FullWeightRollout:
    cfg = VersionsConfig(canary_share=0.5, full_weights="rolling", follower_drain_s=follower_drain_s)
    reg = VersionRegistry(cfg, Recorder(MemoryBus()), lambda: BASE_MODEL)
    return FullWeightRollout(
        reg, Pool([url]), mode="rolling", base_weights=base, drain_timeout_s=drain_timeout_s
    )


def folder(root: Path, name: str) -> str:
    (root / name).mkdir()
    (root / name / "config.json").write_text("{}")
    return str(root / name)


class ReplicaQueue:
    """What the retiring replica reports of every gateway's requests on it (the seam of
    `weights.requests_on`): `busy` until told otherwise; each ask is counted."""

    def __init__(self) -> None:
        self.busy: int | None = 2
        self.asked = 0

    async def __call__(self, url: str, timeout_s: float = 5.0) -> int | None:
        self.asked += 1
        return self.busy


@pytest.fixture
def replica() -> Iterator[str]:
    """A fake replica's /v1 URL: the base's, at start."""
    fake = start_fake(FakeState(keep_requests=False))
    yield fake.url
    fake.stop.set()


async def promoted(url: str, root: Path, follower_drain_s: float) -> tuple[FullWeightRollout, ReplicaQueue]:
    """A controlling gateway, rolling, whose version v1 canaried on a replica of its own and
    was just promoted: the base's replica (`url`, launched by it) is to retire next."""
    leader = gateway(url, folder(root, "base"), follower_drain_s)
    leader.launcher = FakeLauncher()
    leader.requests_on = queue = ReplicaQueue()
    reg = leader.registry
    v1 = PublishedVersion(version="v1", adapter_path=folder(root, "v1"), kind="full")
    assert reg.full_loaded(reg.register(v1))
    await leader.converge()
    leader.pool.replicas[0].launched = True
    reg.promote("v1", "test", {})
    return leader, queue


async def closed(gw: FullWeightRollout) -> None:
    if isinstance(gw.launcher, FakeLauncher):
        await gw.launcher.close()
    await gw.pool.close()


def test_the_controller_stops_a_retired_replica_only_once_the_fleets_requests_on_it_ended(
    tmp_path: Path, replica: str
) -> None:
    async def main() -> None:
        leader, queue = await promoted(replica, tmp_path, follower_drain_s=3600)  # never the deadline
        old = leader.pool.replicas[0]
        retiring = asyncio.create_task(leader.converge())
        while queue.asked < 5:  # a follower's requests still run on it
            await asyncio.sleep(0.01)
        assert not retiring.done() and old in leader.pool.replicas and old.draining
        assert replica in leader.registry.draining_replicas  # every gateway was told first
        queue.busy = 0
        await asyncio.wait_for(retiring, 60)
        assert [r.weights for r in leader.pool.replicas] == ["v1"]
        assert replica in leader.registry.removed_replicas
        await closed(leader)

    asyncio.run(main())


def test_one_gateway_alone_does_not_ask_the_replica(tmp_path: Path, replica: str) -> None:
    async def main() -> None:
        leader, queue = await promoted(replica, tmp_path, follower_drain_s=0)
        await leader.converge()
        assert [r.weights for r in leader.pool.replicas] == ["v1"] and queue.asked == 0
        await closed(leader)

    asyncio.run(main())


def test_a_follower_drops_a_retired_replica_once_its_own_requests_on_it_are_done(
    tmp_path: Path, replica: str
) -> None:
    async def main() -> None:
        follower = gateway(replica, folder(tmp_path, "base"), follower_drain_s=0)
        mine = follower.pool.replicas[0]
        mine.outstanding = 1  # a request of this gateway still runs on it
        follower.registry.replica_removed("base", replica)  # the controlling gateway's event, folded
        await follower.follow()
        assert follower.pool.replicas == [mine] and mine.draining  # kept, but routed nothing
        assert follower.registry.holders("base") == frozenset()
        mine.outstanding = 0
        await follower.follow()
        assert follower.pool.replicas == []
        await closed(follower)

    asyncio.run(main())


def test_a_follower_drops_a_retired_replica_whose_requests_outlive_the_drain_timeout(
    tmp_path: Path, replica: str
) -> None:
    async def main() -> None:
        follower = gateway(replica, folder(tmp_path, "base"), follower_drain_s=0, drain_timeout_s=0)
        follower.pool.replicas[0].outstanding = 1  # hung: never ends
        follower.registry.replica_removed("base", replica)
        await follower.follow()
        assert follower.pool.replicas == []
        await closed(follower)

    asyncio.run(main())
