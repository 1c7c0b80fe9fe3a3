"""The app's ServerApp (``serverapp`` component in pyproject.toml): :data:`app`, whose main is
:func:`run_server`.

Thin: it resolves the experiment from ``context.run_config`` (:mod:`clef_core.federation.run_config`),
prepares the held-out probe set when one is configured, and hands the rounds to
:class:`server.loop.Federation`, which checkpoints each round and resumes a run folder.

The same app runs a simulation and a deployment. In a simulation with run_config
``prepare-sites`` true and no sites.json yet, the sites are first split (or synthesised) by the
function run_config ``site-preparer`` names (the app's pyproject: the simulation's
``simulations.sites:prepare_federation``), so a bare ``flwr run .`` works; it is looked up by
name, never imported here. A deployment sets ``prepare-sites=false``: sites bring their own data
through their node config."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.checkpoint import ServerRunFolder
from server.loop import Federation
from server.probe import ProbeSet
from clef_core.federation.run_config import experiment_config, run_dir, site_preparer, sites_manifest_path
from clef_core.run_folder import FAILED

log = logging.getLogger("clef.server")
app = ServerApp()


def _setup_logging() -> None:
    logger = logging.getLogger("clef")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s clef: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def eval_dir(cfg: Mapping[str, Any], manifest: Path) -> Path | None:
    """The held-out cohort of the probe: ``federation.eval_dir``, else the split's holdout."""
    configured = str(cfg["federation"].get("eval_dir", ""))
    if configured:
        return Path(configured).expanduser().resolve()
    if manifest.is_file():
        value = json.loads(manifest.read_text(encoding="utf-8")).get("eval_dir")
        return Path(value) if value else None
    return None


def load_probe(cfg: Mapping[str, Any], folder: ServerRunFolder, manifest: Path) -> tuple[ProbeSet | None, str]:
    """The probe set, or None and why not (the run goes on without a probe)."""
    if not int(cfg["federation"].get("eval_every", 0)):
        return None, ""
    source = eval_dir(cfg, manifest)
    if source is None:
        return None, "off: no held-out set (federation.eval_dir, or a split with holdout > 0)"
    from clef_core.pipeline import prepare_site

    try:
        site = prepare_site(source, folder.root / "server" / "eval", dict(cfg))
        probe = ProbeSet.from_site(site)
    except Exception as exc:  # the server's own data: report and train on
        log.warning("linear probe disabled: %s: %s", type(exc).__name__, exc)
        return None, f"off: {type(exc).__name__} preparing {source}"
    if probe is None:
        return None, f"off: {source} has no binary labels"
    return probe, ""


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, context)


def run_server(grid: Grid, context: Context) -> Path:
    """One federated run; with run_config ``prepare-sites`` true and no sites.json, the function
    ``site-preparer`` names writes the simulation's sites.json first."""
    _setup_logging()
    cfg = experiment_config(context.run_config)
    folder = ServerRunFolder(run_dir(context.run_config))
    manifest = sites_manifest_path(context.run_config)
    if not manifest.is_file() and bool(context.run_config.get("prepare-sites", False)):
        site_preparer(context.run_config)(cfg, folder.root, manifest=manifest)
    try:
        probe, note = load_probe(cfg, folder, manifest)
        federation = Federation(cfg, folder, manifest, probe=probe, probe_note=note)
        return federation.run(grid)
    except Exception as exc:
        if folder.read_status().get("state") != FAILED:  # a failed round has written its own account
            folder.write_status(FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
