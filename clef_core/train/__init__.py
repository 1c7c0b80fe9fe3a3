"""One training loop for CLEF pretraining, used centrally and by federated clients."""

from clef_core.train.settings import LossConfig, TrainConfig
from clef_core.train.central import PretrainResult, pretrain
from clef_core.train.trainer import EpochStats, NonFiniteLossError, StepInfo, Trainer, resolve_device

__all__ = [
    "EpochStats",
    "LossConfig",
    "NonFiniteLossError",
    "PretrainResult",
    "StepInfo",
    "TrainConfig",
    "Trainer",
    "pretrain",
    "resolve_device",
]
