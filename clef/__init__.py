"""The `clef` command: a thin dispatcher over clef_core, client, server, simulations and edge."""
