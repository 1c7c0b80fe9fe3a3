"""Typed views of the ``[train]`` and ``[loss]`` config sections.

Build them with ``TrainConfig(**cfg["train"])`` and ``LossConfig(**cfg["loss"])``; values are
checked on construction so a bad experiment file fails before any data is touched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from clef_core.config import ConfigError

LOSS_KINDS = ("clef", "ntxent")
SCHEDULES = ("cosine", "sgdr")
WEIGHT_NORMS = ("softmax", "none", "mean_one")
RISK_SCALINGS = ("minmax", "rank")


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
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(self.epochs >= 0, "train.epochs", self.epochs, ">= 0")
        _check(self.max_steps >= 0, "train.max_steps", self.max_steps, ">= 0 (0: no limit)")
        _check(self.schedule in SCHEDULES, "train.schedule", self.schedule, " or ".join(SCHEDULES))
        _check(0 <= self.warmup_fraction < 1, "train.warmup_fraction", self.warmup_fraction, "in [0, 1)")
        _check(self.warm_restart_t0 >= 1, "train.warm_restart_t0", self.warm_restart_t0, ">= 1")
        _check(self.warm_restart_tmult >= 1, "train.warm_restart_tmult", self.warm_restart_tmult, ">= 1")
        _check(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, ">= 0 (0: off)")
        _check(self.num_workers >= 0, "train.num_workers", self.num_workers, ">= 0")
        _check(self.log_every >= 0, "train.log_every", self.log_every, ">= 0")
        ok_device = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        _check(ok_device, "train.device", self.device, "auto, cpu, cuda, cuda:N or mps")

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
    shuffle_risk: bool = False  # placebo: (risk, completeness) permuted among the batch's patients every step

    def __post_init__(self) -> None:
        _check(self.kind in LOSS_KINDS, "loss.kind", self.kind, " or ".join(LOSS_KINDS))
        _check(self.tau > 0, "loss.tau", self.tau, "> 0")
        _check(0 <= self.alpha <= 1, "loss.alpha", self.alpha, "in [0, 1]")
        _check(self.weight_norm in WEIGHT_NORMS, "loss.weight_norm", self.weight_norm, " or ".join(WEIGHT_NORMS))
        _check(self.align_weight >= 0, "loss.align_weight", self.align_weight, ">= 0")
        _check(self.risk_scaling in RISK_SCALINGS, "loss.risk_scaling", self.risk_scaling, " or ".join(RISK_SCALINGS))
        _check(self.projection_dim >= 0, "loss.projection_dim", self.projection_dim, ">= 0 (0: no head)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r}: expected {expected}")
