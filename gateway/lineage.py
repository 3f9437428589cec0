"""A version's ancestry in the registry: who descends from whom, and whether a rolled-back
version lies between a version and the one that serves (docs/versions.md: nothing descending
from a rolled-back version is registered or kept in a canary)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def descends(versions: Mapping[str, Any], vid: str, ancestor: str) -> bool:
    """Whether `ancestor` is a parent, grandparent, ... of `vid`."""
    seen: set[str] = set()
    v = versions.get(vid)
    while v is not None and v.parent is not None and v.id not in seen:
        if v.parent == ancestor:
            return True
        seen.add(v.id)
        v = versions.get(v.parent)
    return False


def rolled_back_between(versions: Mapping[str, Any], vid: str, serving: str) -> str | None:
    """The first rolled-back (or eval-failed) version from `vid` up to (not including)
    `serving`, or None."""
    seen: set[str] = set()
    v = versions.get(vid)
    while v is not None and v.id != serving and v.id not in seen:
        if v.status in ("rolled_back", "eval_failed"):  # eval_failed: never canaried (eval gate)
            return str(v.id)
        seen.add(v.id)
        v = versions.get(v.parent) if v.parent else None
    return None
