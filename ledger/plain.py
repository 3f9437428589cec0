"""Records as plain data, for code that writes many of them (the gateway's request path).

`plain(Turn, episode_id=..., ...)` is a dict shaped exactly as the record's JSON: every field of
the model under its JSON name (alias), the model's defaults filled in (default factories
called: a new `id`, `created_at` now), and a name the model does not have is a TypeError, as is
a required field left out. The record is still defined once, in `ledger.records`; this only
skips pydantic's validation and serialisation, which cost a sixth of the gateway's CPU per
request (see `ledger.records.Encoded`). The values are the caller's to get right: they are
written as given (a unit test checks the gateway's turns survive validation unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import BaseModel


@cache
def _shape(
    model: type[BaseModel],
) -> tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...], frozenset[str], frozenset[str]]:
    """(static defaults, default factories, required names, every name) of a model, by JSON name."""
    static: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    required: list[str] = []
    for name, f in model.model_fields.items():
        key = f.alias or name
        if f.is_required():
            required.append(key)
        elif f.default_factory is not None:
            factories.append((key, f.default_factory))  # type: ignore[arg-type]
        else:
            static[key] = f.default
    names = frozenset(static) | {k for k, _ in factories} | set(required)
    return static, tuple(factories), frozenset(required), names


def plain(record_type: type[BaseModel], /, **fields: Any) -> dict[str, Any]:
    """`record_type`'s JSON shape as a dict: `fields` over its defaults (see the module doc)."""
    static, factories, required, names = _shape(record_type)
    if not names.issuperset(fields):
        raise TypeError(f"{record_type.__name__} has no field {sorted(set(fields) - names)}")
    out = static | fields
    for key, make in factories:
        if key not in fields:
            out[key] = make()
    if not required.issubset(out):
        raise TypeError(f"{record_type.__name__} needs {sorted(required - out.keys())}")
    return out
