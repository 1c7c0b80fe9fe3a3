"""The app's ServerApp (``serverapp`` component in pyproject.toml): server.server_app's rounds,
plus the simulation's site preparation -- with run_config ``prepare-sites`` true and no
sites.json yet, the experiment's sites are split (or synthesised) first, so a bare
``flwr run .`` works. In a deployment (``prepare-sites=false``) nothing is prepared."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.server_app import run_server
from simulations.sites import prepare_federation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, context, lambda exp, root, manifest: prepare_federation(exp, root, manifest=manifest))
