"""The federation experiment: typed ``[federation]`` settings and the Flower run_config mapping.

One experiment file (configs/*.toml) describes a federated run. Flower hands both apps a flat
``context.run_config`` built from ``[tool.flwr.app.config]`` in pyproject.toml plus
``flwr run . -c "k=v ..."`` overrides. Its keys map onto the experiment like this:

* ``experiment``      -- the experiment file (a path, or a name in configs/); "" = the defaults.
* ``set``             -- extra overrides, space-separated ``section.key=value`` (as ``clef --set``).
* ``run-dir``         -- the server's run folder (checkpoints, metrics.jsonl, final_model.pt).
* ``sites-manifest``  -- simulation only: the partition-id -> site folder list (sites.json);
                         "" = ``<run-dir>/sites.json``.
* ``<section>.<key>`` -- a dotted experiment key (``federation.rounds``); its pyproject default is
                         "" meaning "as in the experiment file", any other value overrides it.

Precedence: configs/default.toml < experiment file < ``set`` < dotted keys. Everything about a
*site* (its data folder, id, device, work folder, privacy budget) is not in run_config but in the
site's node_config (deployment: ``flower-supernode --node-config 'data-dir=... site-id=...'``;
simulation: ``partition-id`` indexes sites.json).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clef_core.config import ConfigError, load_config, merge, unflatten

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
LR_SCHEDULES = ("cosine", "constant")
UNSET = ""  # a dotted run_config key left at its pyproject default
META_KEYS = ("experiment", "set", "run-dir", "sites-manifest", "prepare-sites")


@dataclasses.dataclass(frozen=True)
class FederationSettings:
    """The server's side of ``[federation]`` (split and Ray keys are read by simulations/)."""

    strategy: str = "fedavg"
    rounds: int = 10
    local_epochs: int = 1
    local_steps: int = 0
    fraction_train: float = 1.0
    fraction_evaluate: float = 0.0
    min_train_nodes: int = 2
    min_available_nodes: int = 2
    round_timeout: float = 3600.0
    proximal_mu: float = 0.0
    lr_schedule: str = "cosine"
    lr_min: float = 1e-6
    server_lr: float = 0.01
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_tau: float = 1e-3
    max_update_ratio: float = 10.0
    keep_checkpoints: int = 2
    eval_every: int = 1

    def __post_init__(self) -> None:
        _check(self.strategy in STRATEGIES, "strategy", self.strategy, " | ".join(STRATEGIES))
        _check(self.rounds >= 1, "rounds", self.rounds, ">= 1")
        _check(self.local_epochs >= 1, "local_epochs", self.local_epochs, ">= 1")
        _check(self.local_steps >= 0, "local_steps", self.local_steps, ">= 0 (0: no cap)")
        _check(0 < self.fraction_train <= 1, "fraction_train", self.fraction_train, "in (0, 1]")
        _check(0 <= self.fraction_evaluate <= 1, "fraction_evaluate", self.fraction_evaluate, "in [0, 1]")
        _check(self.min_train_nodes >= 1, "min_train_nodes", self.min_train_nodes, ">= 1")
        _check(self.min_available_nodes >= self.min_train_nodes, "min_available_nodes",
               self.min_available_nodes, ">= min_train_nodes")
        _check(self.round_timeout > 0, "round_timeout", self.round_timeout, "> 0")
        _check(self.proximal_mu >= 0, "proximal_mu", self.proximal_mu, ">= 0")
        _check(self.strategy != "fedprox" or self.proximal_mu > 0, "proximal_mu", self.proximal_mu,
               "> 0 with strategy fedprox")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", self.lr_schedule, " | ".join(LR_SCHEDULES))
        _check(self.lr_min >= 0, "lr_min", self.lr_min, ">= 0")
        _check(self.server_lr > 0, "server_lr", self.server_lr, "> 0")
        _check(0 <= self.server_beta1 < 1 and 0 <= self.server_beta2 < 1, "server_beta1/2",
               (self.server_beta1, self.server_beta2), "in [0, 1)")
        _check(self.server_tau > 0, "server_tau", self.server_tau, "> 0")
        _check(self.max_update_ratio > 0, "max_update_ratio", self.max_update_ratio, "> 0")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, ">= 0 (0: all)")
        _check(self.eval_every >= 0, "eval_every", self.eval_every, ">= 0 (0: off)")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> FederationSettings:
        fed = cfg["federation"]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fed.items() if k in names})


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"federation.{key} = {value!r}: expected {expected}")


def experiment_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested experiment config described by a Flower run_config (see the module docstring)."""
    experiment = str(run_config.get("experiment", UNSET)) or None
    overrides = shlex.split(str(run_config.get("set", UNSET)))
    cfg = load_config(experiment, overrides)
    dotted = {k: v for k, v in run_config.items() if k not in META_KEYS and v != UNSET}
    return merge(cfg, unflatten(dotted), strict=True)


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
