"""The server's typed ``[federation]`` settings (the run_config mapping itself is
:mod:`clef_core.federation.run_config`; a site's own settings, :mod:`clef_core.federation.sites`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from clef_core.config import ConfigError

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
LR_SCHEDULES = ("cosine", "constant")


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

    def describe(self) -> str:
        """The strategy and its settings in one line, for the console at the start of a run."""
        extra = {"fedprox": f" (proximal_mu {self.proximal_mu:g})",
                 "fedadam": f" (server_lr {self.server_lr:g}, beta1 {self.server_beta1:g}, beta2 {self.server_beta2:g}, "
                            f"tau {self.server_tau:g})"}
        extra["fedyogi"] = extra["fedadam"]
        steps = f"{self.local_steps} local steps" if self.local_steps else f"{self.local_epochs} local epoch(s)"
        return (f"strategy {self.strategy}{extra.get(self.strategy, '')}, {steps}, fraction_train "
                f"{self.fraction_train:g}, lr schedule {self.lr_schedule}")

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
