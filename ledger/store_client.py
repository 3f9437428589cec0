"""The clickhouse-connect client of a store DSN: a server's, or this process's one embedded engine.

chdb runs one engine per process and one process per data path: opening the same `chdb://` path
twice gives the same client, and a second path is refused (ledger/store.py).
"""

from __future__ import annotations

import threading
from typing import Any

import clickhouse_connect


class StoreError(RuntimeError):
    pass


_embedded: dict[str, Any] = {}  # chdb path -> client: one engine per process
_embedded_lock = threading.Lock()


def client_for(dsn: str) -> Any:
    if not dsn.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=dsn)
    with _embedded_lock:
        if dsn not in _embedded:
            if _embedded:
                held = next(iter(_embedded))
                raise StoreError(f"this process already runs the embedded store {held}; chdb allows one")
            try:
                _embedded[dsn] = clickhouse_connect.get_client(dsn=dsn)
            except Exception as exc:
                raise StoreError(
                    f"cannot open the embedded store {dsn} (is another process using this data dir?): {exc}"
                ) from exc
        return _embedded[dsn]
