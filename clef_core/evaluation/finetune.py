"""Fine-tuning: the pretrained encoder plus a linear head trained end to end with AdamW.

Loss: masked mean BCE for binary labels (NaN = unknown, left out), class-weighted
cross-entropy for single-label classes, MSE on the standardised target for regression. The
head learns 10x faster than the encoder (a fresh head on a pretrained body); gradients are
clipped to norm 1. Windows are z-scored per window as in pretraining; no augmentation.

Epoch choice: given ``select`` (a score of the model after each epoch, or every ``select_every``
epochs and after the last; higher is better, e.g. a validation AUROC), the encoder and head of the
best scored epoch are kept (ties: the earlier epoch) and ``best_epoch`` says which; without it,
the last epoch's.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from clef_core.data.preprocess import zscore
from clef_core.evaluation.probe import ACTIVATION, KINDS, balanced_weights
from clef_core.task import fit
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.trainer import EpochStats, StepInfo, Trainer


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    lr: float = 1e-4  # encoder; the head uses head_lr_factor * lr
    head_lr_factor: float = 10.0
    weight_decay: float = 5e-4
    batch_size: int = 32
    grad_clip: float = 1.0
    seed: int = 0


@dataclasses.dataclass
class FineTuned:
    """A fine-tuned ``encoder`` and ``head`` (raw embeddings -> outputs in target units)."""

    kind: str
    labels: list[str]
    encoder: nn.Module
    head: nn.Linear
    history: list[float]  # mean training loss per epoch
    best_epoch: int = 0  # 1-based epoch kept (the last one without ``select``)
    selection: list[float] = dataclasses.field(default_factory=list)  # select's score after each epoch

    @property
    def activation(self) -> str:
        return ACTIVATION[self.kind]

    def decision(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Logits or regression predictions (N, C) for windows ``x`` (N, T)."""
        return _outputs(self.encoder, self.head, x, batch_size)


def finetune(
    encoder: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    labels: Sequence[str],
    cfg: FinetuneConfig = FinetuneConfig(),
    class_weight: str | None = None,
    select: Callable[[Callable[[np.ndarray], np.ndarray]], float] | None = None,
    select_every: int = 1,
) -> FineTuned:
    """Fine-tune a copy of ``encoder`` with a new linear head on windows ``x`` (N, T); ``y`` as in
    :func:`clef_core.evaluation.probe.fit_probe`. The given encoder is left untouched.

    ``select(decide)`` scores the model after each epoch, ``decide(windows) -> (N, C)`` being its
    raw outputs (logits; standardised targets for regression); the best epoch's weights are kept.
    ``select_every``: score only every that many epochs (and after the last)."""
    if kind not in KINDS:
        raise ValueError(f"finetune: kind {kind!r} is not one of {KINDS}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    enc = copy.deepcopy(encoder).train()
    labels = [str(label) for label in labels]
    head = nn.Linear(int(enc.emb_dim), len(labels))
    if kind == "multiclass":
        target = torch.as_tensor(np.asarray(y, np.int64).ravel())
        weight = torch.as_tensor(balanced_weights(target.numpy(), len(labels)), dtype=torch.float32) if class_weight == "balanced" else None
        loss_fn = lambda out, t: nn.functional.cross_entropy(out, t, weight=weight)  # noqa: E731
        y_mean = y_std = None
    else:
        yy = np.asarray(y, np.float64)
        yy = yy[:, None] if yy.ndim == 1 else yy
        y_mean = np.zeros(yy.shape[1])
        y_std = np.ones(yy.shape[1])
        if kind == "regression":
            y_mean, y_std = yy.mean(axis=0), np.where(yy.std(axis=0) > 0, yy.std(axis=0), 1.0)
            yy = (yy - y_mean) / y_std
        target = torch.as_tensor(yy, dtype=torch.float32)
        loss_fn = _masked_bce if kind == "binary" else _masked_mse
    trainer = Trainer(nn.Sequential(enc, head), LossConfig(), _train_config(cfg), criterion=lambda out, b: loss_fn(out, b["y"]),
                      unpack=_labelled_batch, param_groups=[
                          {"params": list(enc.parameters()), "lr": cfg.lr},
                          {"params": list(head.parameters()), "lr": cfg.lr * cfg.head_lr_factor},
                      ])
    xz = zscore(np.asarray(x, np.float32))
    history: list[float] = []
    selection: list[float] = []
    best: tuple[dict, dict] | None = None
    best_epoch, best_score = 0, -np.inf
    seen = [0.0, 0]  # the epoch's example-weighted loss sum and examples

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        order = rng.permutation(len(xz))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            yield {"x": torch.from_numpy(xz[idx][:, None, :]), "y": target[idx]}

    def on_step(info: StepInfo) -> None:
        seen[0] += info.loss * info.examples
        seen[1] += info.examples

    def on_epoch(stats: EpochStats) -> None:
        nonlocal best, best_epoch, best_score
        history.append(seen[0] / max(seen[1], 1))
        seen[:] = [0.0, 0]
        if select is not None and (stats.epoch % select_every == 0 or stats.epoch == cfg.epochs):
            selection.append(float(select(lambda w: _outputs(enc, head, w))))
            score = selection[-1] if np.isfinite(selection[-1]) else -np.inf
            if best is None or score > best_score:
                best, best_epoch, best_score = (copy.deepcopy(enc.state_dict()), copy.deepcopy(head.state_dict())), stats.epoch, score
            enc.train()

    fit(trainer, batches, epochs=cfg.epochs, schedule=False, on_step=on_step, on_epoch=on_epoch)
    if best is not None:
        enc.load_state_dict(best[0])
        head.load_state_dict(best[1])
    else:
        best_epoch = len(history)
    enc.eval()
    if kind == "regression":  # fold the target scaling into the head
        with torch.no_grad():
            head.weight.mul_(torch.as_tensor(y_std, dtype=torch.float32)[:, None])
            head.bias.mul_(torch.as_tensor(y_std, dtype=torch.float32)).add_(torch.as_tensor(y_mean, dtype=torch.float32))
    return FineTuned(kind, labels, enc, head.eval(), history, best_epoch, selection)


def _train_config(cfg: FinetuneConfig) -> TrainConfig:
    """The optimisation of ``cfg`` (a constant rate: fine-tuning runs without a schedule)."""
    return TrainConfig(batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                       grad_clip=cfg.grad_clip, seed=cfg.seed, device="cpu")


def _labelled_batch(batch: dict[str, torch.Tensor], index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """(windows, batch, examples): a batch whose labels are all unknown is skipped (0 examples)."""
    known = bool(torch.isfinite(batch["y"]).any())
    return batch["x"], batch, len(batch["x"]) if known else 0


def _outputs(enc: nn.Module, head: nn.Linear, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Raw head outputs (N, C) for windows ``x`` (N, T) in eval mode (the caller restores train mode)."""
    enc.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(zscore(np.asarray(x[i : i + batch_size], np.float32))[:, None, :])
            outs.append(head(enc(xb)).double().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, head.out_features))


def _masked_bce(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    known = torch.isfinite(target)
    if not known.any():
        return torch.tensor(float("nan"))
    return nn.functional.binary_cross_entropy_with_logits(out[known], target[known])


def _masked_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    known = torch.isfinite(target)
    return nn.functional.mse_loss(out[known], target[known])
