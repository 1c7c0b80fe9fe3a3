"""The typed ``[federation]`` section: the server's strategy and rounds, the simulated sites' split,
and the simulation engine (the run_config mapping itself is :mod:`clef_core.federation.run_config`;
a site's own settings, :mod:`clef_core.federation.site_spec`). The split keys are validated where a
split is made (``simulations.partition.SplitSpec``)."""

from __future__ import annotations

import dataclasses

from clef_core.config import require

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
LR_SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class FederationSettings:
    """``[federation]`` (configs/default.toml documents each key)."""

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
    # the simulated sites: one cohort split into sites, or one folder per site
    cohort: str = ""
    sites: int = 3
    split: str = "iid"
    split_seed: int = 0
    dirichlet_beta: float = 0.5
    dirichlet_by: str = "risk"
    skew_sigma: float = 1.0
    min_site_patients: int = 2
    holdout: float = 0.2
    site_dirs: tuple[str, ...] = ()
    eval_dir: str = ""
    eval_every: int = 1
    # the simulation engine (Ray)
    client_cpus: int = 1
    client_gpus: float = 0.0
    ray_address: str = ""

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
        object.__setattr__(self, "site_dirs", tuple(self.site_dirs))
        require(self.strategy in STRATEGIES, "federation.strategy", self.strategy, " | ".join(STRATEGIES))
        require(self.rounds >= 1, "federation.rounds", self.rounds, ">= 1")
        require(self.local_epochs >= 1, "federation.local_epochs", self.local_epochs, ">= 1")
        require(self.local_steps >= 0, "federation.local_steps", self.local_steps, ">= 0 (0: no cap)")
        require(0 < self.fraction_train <= 1, "federation.fraction_train", self.fraction_train, "in (0, 1]")
        require(0 <= self.fraction_evaluate <= 1, "federation.fraction_evaluate", self.fraction_evaluate, "in [0, 1]")
        require(self.min_train_nodes >= 1, "federation.min_train_nodes", self.min_train_nodes, ">= 1")
        require(self.min_available_nodes >= self.min_train_nodes, "federation.min_available_nodes",
                self.min_available_nodes, ">= min_train_nodes")
        require(self.round_timeout > 0, "federation.round_timeout", self.round_timeout, "> 0")
        require(self.proximal_mu >= 0, "federation.proximal_mu", self.proximal_mu, ">= 0")
        require(self.strategy != "fedprox" or self.proximal_mu > 0, "federation.proximal_mu", self.proximal_mu,
                "> 0 with strategy fedprox")
        require(self.lr_schedule in LR_SCHEDULES, "federation.lr_schedule", self.lr_schedule, " | ".join(LR_SCHEDULES))
        require(self.lr_min >= 0, "federation.lr_min", self.lr_min, ">= 0")
        require(self.server_lr > 0, "federation.server_lr", self.server_lr, "> 0")
        require(0 <= self.server_beta1 < 1 and 0 <= self.server_beta2 < 1, "federation.server_beta1/2",
                (self.server_beta1, self.server_beta2), "in [0, 1)")
        require(self.server_tau > 0, "federation.server_tau", self.server_tau, "> 0")
        require(self.max_update_ratio > 0, "federation.max_update_ratio", self.max_update_ratio, "> 0")
        require(self.keep_checkpoints >= 0, "federation.keep_checkpoints", self.keep_checkpoints, ">= 0 (0: all)")
        require(self.eval_every >= 0, "federation.eval_every", self.eval_every, ">= 0 (0: off)")
