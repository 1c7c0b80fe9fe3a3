"""Flower's flat run_config <-> the experiment (configs/*.toml).

Flower hands both apps a flat ``context.run_config`` built from ``[tool.flwr.app.config]`` in
pyproject.toml plus ``flwr run . -c "k=v ..."`` overrides. Its keys map onto the experiment:

* ``experiment``      -- the experiment file (a path, or a name in configs/); "" = the defaults.
* ``set``             -- extra overrides, space-separated ``section.key=value`` (as ``clef --set``).
* ``run-dir``         -- the server's run folder (checkpoints, metrics.jsonl, final_model.pt).
* ``sites-manifest``  -- simulation only: the partition-id -> site folder list (sites.json);
                         "" = ``<run-dir>/sites.json``.
* ``prepare-sites``   -- simulation: write sites.json from the experiment when it is missing
                         (deployment: false, the sites bring their own data).
* ``site-preparer``   -- the ``module:function`` that ``prepare-sites`` calls (:func:`site_preparer`).
* ``<section>.<key>`` -- a dotted experiment key (``federation.rounds``); its pyproject default is
                         "" meaning "as in the experiment file", any other value overrides it.

Precedence: configs/default.toml < experiment file < ``set`` < dotted keys. Everything about a
*site* (its data folder, id, device, work folder, privacy policy) is not in run_config but in the
site's node_config (deployment) or its sites.json entry (simulation): :mod:`clef_core.federation.sites`.
"""

from __future__ import annotations

import importlib
import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clef_core.config import ConfigError, load_config, merge, unflatten

UNSET = ""  # a dotted run_config key left at its pyproject default
META_KEYS = ("experiment", "set", "run-dir", "sites-manifest", "prepare-sites", "site-preparer")


def experiment_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested experiment config described by a Flower run_config (see the module docstring)."""
    experiment = str(run_config.get("experiment", UNSET)) or None
    cfg = load_config(experiment, set_overrides(run_config))
    return merge(cfg, unflatten(dotted_overrides(run_config)), strict=True)


def set_overrides(run_config: Mapping[str, Any]) -> list[str]:
    """The ``section.key=value`` items of run_config ``set``."""
    return shlex.split(str(run_config.get("set", UNSET)))


def dotted_overrides(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted experiment keys run_config sets (not left at "")."""
    return {k: v for k, v in run_config.items() if k not in META_KEYS and v != UNSET}


def requested_keys(run_config: Mapping[str, Any]) -> set[str]:
    """Every dotted experiment key the run_config itself names (dotted keys and ``set`` items)."""
    named = {item.split("=", 1)[0].strip() for item in set_overrides(run_config) if "=" in item}
    return named | set(dotted_overrides(run_config))


def run_dir(run_config: Mapping[str, Any]) -> Path:
    """The run folder; "" = ``$FLWR_HOME/clef-runs/default`` (an absolute path is best: the
    ServerApp runs in the SuperLink's working directory)."""
    value = str(run_config.get("run-dir", UNSET))
    if value:
        return Path(value).expanduser().resolve()
    home = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    return (home / "clef-runs" / "default").resolve()


def sites_manifest_path(run_config: Mapping[str, Any]) -> Path:
    value = str(run_config.get("sites-manifest", UNSET))
    return Path(value).expanduser().resolve() if value else run_dir(run_config) / "sites.json"


def site_preparer(run_config: Mapping[str, object]) -> Callable[..., object]:
    """The function run_config ``site-preparer`` names, ``module:function`` as Flower names an
    app's components; the ServerApp calls it as ``f(experiment, run_folder, manifest=sites.json)``. The app's pyproject names the simulation's
    (``simulations.sites:prepare_federation``): the ServerApp looks it up by name, so that the
    server never imports the simulation and a deployment (``prepare-sites=false``) never loads it."""
    value = str(run_config.get("site-preparer", UNSET))
    module_name, _, name = value.partition(":")
    where = f"run_config site-preparer = {value!r}"
    if not module_name or not name:
        raise ConfigError(f"{where}: expected 'module:function' (the app's is 'simulations.sites:prepare_federation')")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name} ({exc})") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{where}: {module_name} has no function {name}")
    return function
