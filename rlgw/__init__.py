"""The `rlgw` command line: wires the packages together and starts them; nothing imports it."""
