"""Two gateways in front of one full-weight pool agree: the follower, fed the controlling
gateway's version events, routes every episode to the same version and the same replicas —
through a canary on a replica of its own, mid-swap (the replica being reloaded is out of
routing on both) and after a rolling swap added and retired replicas (gateway/rollout.py,
gateway/full_versions.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.config import VersionsConfig
from gateway.fake_upstream import BASE_MODEL, FakeState
from gateway.pool import Pool
from gateway.rollout import FullWeightRollout
from gateway.versions import VersionRegistry
from gateway.weights import FakeLauncher
from ledger.bus import MemoryBus
from ledger.published import PublishedVersion
from ledger.recorder import Recorder
from tests.fixtures.upstream import start_fake

EPISODES = [f"e{i}" for i in range(200)]


def folder(root: Path, name: str) -> str:
    (root / name).mkdir()
    (root / name / "config.json").write_text(json.dumps({"tie_word_embeddings": False}))
    return str(root / name)


def gateway(urls: list[str], mode: str, base: str) -> FullWeightRollout:
    cfg = VersionsConfig(canary_share=0.3, full_weights=mode, base_weights=base)  # type: ignore[arg-type]
    reg = VersionRegistry(cfg, Recorder(MemoryBus()), lambda: BASE_MODEL)
    return FullWeightRollout(reg, Pool(urls), mode=mode, base_weights=base)


async def caught_up(leader: FullWeightRollout, follower: FullWeightRollout) -> None:
    follower.registry.restore(list(leader.registry.events))  # what its versions feed does
    await follower.follow()


def routes(gw: FullWeightRollout) -> dict[str, tuple[str, frozenset[str]]]:
    """Each episode's version and the replicas it may go to (None: any, spelt out)."""
    every = frozenset(r.url for r in gw.pool.replicas)
    return {e: (r.version, r.replicas or every) for e in EPISODES for r in [gw.registry.route(e, "t")]}


def test_a_follower_routes_in_place_versions_to_the_replicas_the_controller_put_them_on(
    tmp_path: Path,
) -> None:
    fakes = [start_fake(FakeState(keep_requests=False)) for _ in range(3)]
    urls = [f.url for f in fakes]
    base, v1 = folder(tmp_path, "base"), folder(tmp_path, "v1")

    async def main() -> None:
        leader, follower = gateway(urls, "in_place", base), gateway(urls, "in_place", base)
        reg = leader.registry
        v = reg.register(PublishedVersion(version="v1", adapter_path=v1, kind="full"))
        assert reg.full_loaded(v)
        await leader.converge()  # the canary on a replica of its own
        await caught_up(leader, follower)
        held = [r.url for r in leader.pool.replicas if r.weights == "v1"]
        assert len(held) == 1 and follower.registry.placement == {held[0]: "v1"}
        mine = routes(leader)
        assert mine == routes(follower)
        assert {r for version, r in mine.values() if version == "v1"} == {frozenset(held)}
        assert {version for version, _ in mine.values()} == {"base", "v1"}

        reg.promote("v1", "test", {})
        reloading, go = asyncio.Event(), asyncio.Event()
        reload = leader.reloader.reload

        async def held_back(url: str, weights_path: str) -> None:
            reloading.set()
            await go.wait()
            await reload(url, weights_path)

        leader.reloader.reload = held_back  # type: ignore[method-assign]
        swap = asyncio.create_task(leader.converge())
        await reloading.wait()  # mid-swap: one replica drained, about to reload
        await caught_up(leader, follower)
        draining = {r.url for r in leader.pool.replicas if r.draining}
        assert len(draining) == 1 and follower.registry.draining_replicas == draining
        assert routes(leader) == routes(follower)
        assert all(not (r & draining) for _, r in routes(follower).values())
        go.set()
        await swap
        await caught_up(leader, follower)
        assert [r.weights for r in follower.pool.replicas] == ["v1"] * 3
        assert not any(r.draining for r in follower.pool.replicas)
        assert routes(leader) == routes(follower)
        await leader.pool.close()
        await follower.pool.close()

    try:
        asyncio.run(main())
    finally:
        for f in fakes:
            f.stop.set()


def test_a_follower_takes_in_the_replicas_a_rolling_swap_starts_and_drops_those_it_retires(
    tmp_path: Path,
) -> None:
    fake = start_fake(FakeState(keep_requests=False))
    base, v1 = folder(tmp_path, "base"), folder(tmp_path, "v1")

    async def main() -> None:
        leader, follower = gateway([fake.url], "rolling", base), gateway([fake.url], "rolling", base)
        leader.launcher = FakeLauncher()
        reg = leader.registry
        assert reg.full_loaded(reg.register(PublishedVersion(version="v1", adapter_path=v1, kind="full")))
        await leader.converge()
        await caught_up(leader, follower)
        assert len(follower.pool.replicas) == 2 and routes(leader) == routes(follower)
        reg.promote("v1", "test", {})
        await leader.converge()  # the base's replica drained, removed, stopped
        await caught_up(leader, follower)
        assert [r.url for r in follower.pool.replicas] == [r.url for r in leader.pool.replicas]
        assert [r.weights for r in follower.pool.replicas] == ["v1"]
        assert routes(leader) == routes(follower)
        assert fake.url in follower.registry.removed_replicas
        await leader.launcher.close()
        await leader.pool.close()
        await follower.pool.close()

    try:
        asyncio.run(main())
    finally:
        fake.stop.set()
