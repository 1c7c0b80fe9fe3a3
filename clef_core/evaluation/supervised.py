"""The supervised control of the comparison benchmark: the same encoder trained on the labels.

Compute is matched to contrastive pretraining: the same ``PretrainDataset`` items (one record
per patient, two augmented views), the same batch size, optimizer (AdamW lr / weight decay),
learning-rate schedule (train.schedule), gradient clipping, epochs and step cap; both views go through the
encoder (2N forwards per step, as for CLEF) and each is scored against its record's labels by a
linear head with the masked mean BCE (a label unknown for a record, e.g. high_risk outside
SCORE2's ages, is left out). Only the encoder is returned: it is then probed like the others.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from clef_core.data.augment import ViewConfig
from clef_core.encoders.config import make_config
from clef_core.task import build_model, fit, make_dataset, make_loader
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.trainer import Criterion, Trainer, seed_everything


def record_labels(site: Any, labels: Sequence[str]) -> np.ndarray:
    """(n_store_rows, C) float32 labels of each store window's record (NaN when unknown)."""
    table = site.labels
    if table is None:
        raise ValueError(f"{site.root}: no labels.csv: the supervised control needs labels")
    key = table["record_id"] if "record_id" in table.columns else table["study_id"]
    values = table.assign(record_id=key.astype(str)).set_index("record_id")[list(labels)]
    rows = values.reindex(site.store.index["record_id"].astype(str).to_numpy())
    return rows.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)


def train_supervised(cfg: dict[str, Any], site: Any, labels: Sequence[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``[model]`` + a linear head on ``labels`` of ``site`` under ``[train]``; returns the
    encoder (eval mode) and a summary (steps, examples, mean loss of the last epoch, seconds)."""
    started = time.perf_counter()
    tc = TrainConfig(**cfg["train"])
    seed_everything(tc.seed)
    encoder = build_model(make_config(**cfg["model"]))
    head = nn.Linear(int(encoder.emb_dim), len(labels))
    trainer = Trainer(nn.Sequential(encoder, head), LossConfig(), tc,
                      criterion=labels_criterion(torch.as_tensor(record_labels(site, labels))))
    dataset = make_dataset(ViewConfig(**cfg["views"]), site, tc.seed)
    history = fit(trainer, lambda epoch: make_loader(dataset, tc, epoch), epochs=tc.epochs, max_steps=tc.max_steps)
    return encoder.cpu().eval(), {"steps": trainer.step, "examples": sum(s.examples for s in history),
                                  "final_loss": history[-1].loss if history else float("nan"),
                                  "seconds": time.perf_counter() - started}


def labels_criterion(y_rows: torch.Tensor) -> Criterion:
    """Masked mean BCE of both views' outputs against their window's labels ``y_rows[window]``
    (unknown labels left out; a batch with none known contributes a zero loss)."""

    def criterion(out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        target = y_rows[batch["window"]].repeat(2, 1).to(out.device)
        known = torch.isfinite(target)
        if not known.any():
            return out.sum() * 0
        return nn.functional.binary_cross_entropy_with_logits(out[known], target[known])

    return criterion
