"""Real deployment tooling: trial certificates and node keys, site preflight, offline install.

See docs/deployment.md. Nothing here talks to the network.
"""
