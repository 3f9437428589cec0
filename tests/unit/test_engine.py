"""Starting vLLM-CPU replicas: each replica of several gets cores of its own."""

from __future__ import annotations

import os

from gateway.engine import replica_cpus


def test_replicas_get_disjoint_cores_of_this_machine() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert replica_cpus(0, 1) is None  # one replica: vLLM's own choice
    shares = [set(map(int, (replica_cpus(i, 2) or "").split(","))) for i in range(2)]
    assert all(share and share <= set(cores) for share in shares)
    if len(cores) >= 2:
        assert not shares[0] & shares[1]
    many = [replica_cpus(i, len(cores) + 1) for i in range(len(cores) + 1)]
    assert many[-1] == many[0]  # more replicas than cores: wraps round
