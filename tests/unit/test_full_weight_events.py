"""Full-weight placement is made of version events: a restarted or following gateway that
replays them rebuilds kind, status, canary and the replicas holding the weights; a registry
whose versions topic cannot be written changes nothing. And what `keep_versions` spares."""

from __future__ import annotations

import pytest

from gateway.config import VersionsConfig
from gateway.version_log import VersionLogUnavailable
from gateway.versions import VersionRegistry
from learner.follow import Fleet
from ledger.bus import MemoryBus
from ledger.published import PublishedVersion
from ledger.recorder import Recorder


def registry() -> VersionRegistry:
    return VersionRegistry(VersionsConfig(), Recorder(MemoryBus()), lambda: "/models/base")


def test_replaying_the_events_rebuilds_full_weight_placement() -> None:
    reg = registry()
    held: dict[str, frozenset[str]] = {}
    reg.place_with(lambda weights: held.get(weights, frozenset()))
    v = reg.register(PublishedVersion(version="v1", adapter_path="/w/v1", kind="full"))
    assert reg.full_loaded(v) and reg.canary == "v1"
    assert reg.assign("e1") == "base"  # no replica holds v1 yet: its canary gets nothing
    held["v1"] = frozenset({"http://r2"})
    reg.resident("v1", ["http://r2"], {"mode": "in_place", "replica": "http://r2"})
    w = reg.register(PublishedVersion(version="v2", adapter_path="/w/v2", kind="full", parent="base"))
    reg.full_failed(w, "reload refused")

    again = registry()
    again.restore(reg.events)
    assert again.versions["v1"].kind == "full" and again.versions["v1"].weights == "v1"
    assert (again.serving, again.canary) == ("base", "v1")
    assert again.versions["v1"].replicas == {"http://r2": "loaded"}
    assert again.versions["v2"].status == "failed"
    assert again.upstream_name("v1") == "/models/base"  # replicas keep their start name


def test_a_placement_change_waits_for_the_versions_topic() -> None:
    reg = registry()
    v = reg.register(PublishedVersion(version="v1", adapter_path="/w/v1", kind="full"))

    def down(events: object) -> None:
        raise VersionLogUnavailable("versions topic down")

    reg.log.append = down  # type: ignore[method-assign]
    with pytest.raises(VersionLogUnavailable):
        reg.full_loaded(v)
    assert (reg.versions["v1"].status, reg.canary) == ("registered", None)


def test_fleet_protect_spares_what_serves_or_may_be_rolled_back_to() -> None:
    listing = {
        "serving": "v2",
        "canary": "v4",
        "versions": [
            {"id": "v1", "parent": "base", "status": "retired"},
            {"id": "v2", "parent": "v1", "status": "serving"},
            {"id": "v3", "parent": "v2", "status": "rolled_back"},
            {"id": "v4", "parent": "v2", "status": "canary"},
            {"id": "v5", "parent": "v4", "status": "loaded"},
            {"id": "v0", "parent": "base", "status": "retired", "pinned": True},
        ],
    }
    pending = [PublishedVersion(version="v6", adapter_path="/w/v6", parent="v5")]
    assert Fleet.from_listing(listing).protect(pending) == {"base", "v0", "v1", "v2", "v4", "v5", "v6"}
