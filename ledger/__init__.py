"""The ledger: records, the bus, the spool, the store and config — the ground everything stands on."""
