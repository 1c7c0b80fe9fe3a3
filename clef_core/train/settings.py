"""Typed views of the ``[train]``, ``[loss]`` and ``[distill]`` config sections.

An experiment holds them as ``exp.train`` and ``exp.loss`` (:mod:`clef_core.experiment`); values are
checked on construction so a bad experiment file fails before any data is touched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from clef_core.config import require

LOSS_KINDS = ("clef", "ntxent")
SCHEDULES = ("cosine", "sgdr")
WEIGHT_NORMS = ("softmax", "none", "mean_one")
RISK_SCALINGS = ("minmax", "rank")
UNKNOWN_WEIGHTS = ("one", "mean")
SHUFFLE_SCOPES = ("all", "known")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (``[train]``). Paper: AdamW lr 1e-4, wd 5e-4, SGDR T0 10 Tmult 2, batch 64
    (configs/paper.toml); default schedule: linear warm-up then one cosine over the run."""

    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 5e-4
    epochs: int = 1
    max_steps: int = 0  # 0: no step limit
    schedule: str = "cosine"  # cosine (warm-up + one cosine over the run) | sgdr (warm restarts, paper)
    warmup_fraction: float = 0.05  # cosine: share of the run's steps warming up
    warm_restart_t0: int = 10  # epochs
    warm_restart_tmult: int = 2
    grad_clip: float = 1.0  # max global L2 norm; 0 disables clipping
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    log_every: int = 0  # also write a metrics line every k optimizer steps; 0: per epoch only

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        require(self.lr > 0, "train.lr", self.lr, "> 0")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        require(self.epochs >= 0, "train.epochs", self.epochs, ">= 0")
        require(self.max_steps >= 0, "train.max_steps", self.max_steps, ">= 0 (0: no limit)")
        require(self.schedule in SCHEDULES, "train.schedule", self.schedule, " or ".join(SCHEDULES))
        require(0 <= self.warmup_fraction < 1, "train.warmup_fraction", self.warmup_fraction, "in [0, 1)")
        require(self.warm_restart_t0 >= 1, "train.warm_restart_t0", self.warm_restart_t0, ">= 1")
        require(self.warm_restart_tmult >= 1, "train.warm_restart_tmult", self.warm_restart_tmult, ">= 1")
        require(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, ">= 0 (0: off)")
        require(self.num_workers >= 0, "train.num_workers", self.num_workers, ">= 0")
        require(self.log_every >= 0, "train.log_every", self.log_every, ">= 0")
        ok_device = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        require(ok_device, "train.device", self.device, "auto, cpu, cuda, cuda:N or mps")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss settings (``[loss]``): ``kind`` "clef" (clinically weighted) or "ntxent" (SimCLR control)."""

    kind: str = "clef"
    tau: float = 0.07
    alpha: float = 0.2
    use_mask: bool = True
    weight_norm: str = "softmax"
    align_weight: float = 1.0
    risk_scaling: str = "minmax"  # minmax (reference) | rank (batch quantiles)
    projection_dim: int = 0  # > 0: the loss sees a SimCLR projection head's output; probes use the encoder
    shuffle_risk: bool = False  # placebo: risks permuted among the batch's patients every step
    shuffle_scope: str = "all"  # all: (risk, completeness) together | known: risks among known-risk patients only
    unknown_weight: str = "one"  # D of a pair with an unknown risk: one (paper) | mean (the batch's mean known-pair D)
    weight_power: float = 1.0  # D of known pairs raised to this power (1: paper; > 1 sharper)

    def __post_init__(self) -> None:
        require(self.kind in LOSS_KINDS, "loss.kind", self.kind, " or ".join(LOSS_KINDS))
        require(self.tau > 0, "loss.tau", self.tau, "> 0")
        require(0 <= self.alpha <= 1, "loss.alpha", self.alpha, "in [0, 1]")
        require(self.weight_norm in WEIGHT_NORMS, "loss.weight_norm", self.weight_norm, " or ".join(WEIGHT_NORMS))
        require(self.align_weight >= 0, "loss.align_weight", self.align_weight, ">= 0")
        require(self.risk_scaling in RISK_SCALINGS, "loss.risk_scaling", self.risk_scaling, " or ".join(RISK_SCALINGS))
        require(self.shuffle_scope in SHUFFLE_SCOPES, "loss.shuffle_scope", self.shuffle_scope, " or ".join(SHUFFLE_SCOPES))
        require(self.unknown_weight in UNKNOWN_WEIGHTS, "loss.unknown_weight", self.unknown_weight,
               " or ".join(UNKNOWN_WEIGHTS))
        require(self.weight_power > 0, "loss.weight_power", self.weight_power, "> 0")
        require(self.projection_dim >= 0, "loss.projection_dim", self.projection_dim, ">= 0 (0: no head)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """The ``[distill]`` config section (configs/default.toml documents each key)."""

    scale: str = "tiny"
    sample_rate: int = 250
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    grad_clip: float = 1.0
    seed: int = 0
    stat_views: int = 256
    device: str = "auto"
    log_every: int = 0
    export: bool = True
    calibration: str = ""

    def __post_init__(self) -> None:
        for key, ok, expected in (("sample_rate", self.sample_rate > 0, "> 0"), ("steps", self.steps >= 1, ">= 1"),
                                  ("batch_size", self.batch_size >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                                  ("weight_decay", self.weight_decay >= 0, ">= 0"), ("grad_clip", self.grad_clip >= 0, ">= 0"),
                                  ("stat_views", self.stat_views >= 2, ">= 2"), ("log_every", self.log_every >= 0, ">= 0")):
            require(ok, f"distill.{key}", getattr(self, key), expected)

    def train_config(self, epochs: int) -> TrainConfig:
        """The optimisation of ``epochs`` passes: one cosine decay from ``lr`` over all of them."""
        return TrainConfig(batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, epochs=epochs,
                           max_steps=self.steps, schedule="sgdr", warm_restart_t0=max(1, epochs), warm_restart_tmult=1,
                           grad_clip=self.grad_clip, seed=self.seed, device=self.device, log_every=self.log_every)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
