"""The `lfz` command line: the demo, a supervisor that runs the whole system locally, and a client of the gateway."""
