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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from clef_core.train.loop import build_model, make_dataset, make_loader
from clef_core.train.trainer import resolve_device, seed_everything, warmup_cosine

if TYPE_CHECKING:
    from clef_core.experiment import Experiment


def record_labels(site: Any, labels: Sequence[str]) -> np.ndarray:
    """(n_store_rows, C) float32 labels of each store window's record (NaN when unknown)."""
    table = site.labels
    if table is None:
        raise ValueError(f"{site.root}: no labels.csv: the supervised control needs labels")
    key = table["record_id"] if "record_id" in table.columns else table["study_id"]
    values = table.assign(record_id=key.astype(str)).set_index("record_id")[list(labels)]
    rows = values.reindex(site.store.index["record_id"].astype(str).to_numpy())
    return rows.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)


def train_supervised(exp: Experiment, site: Any, labels: Sequence[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``[model]`` + a linear head on ``labels`` of ``site`` under ``[train]``; returns the
    encoder (eval mode) and a summary (steps, examples, mean loss of the last epoch, seconds)."""
    started = time.perf_counter()
    tc = exp.train
    seed_everything(tc.seed)
    device = resolve_device(tc.device)
    encoder = build_model(exp.model).to(device)
    head = nn.Linear(int(encoder.emb_dim), len(labels)).to(device)
    y_rows = torch.as_tensor(record_labels(site, labels))
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=tc.warm_restart_t0, T_mult=tc.warm_restart_tmult)
    dataset = make_dataset(exp.views, site, tc.seed)
    step, examples, last = 0, 0, float("nan")
    encoder.train()
    for epoch in range(tc.epochs):
        loader = make_loader(dataset, tc, epoch)
        total, count = 0.0, 0
        for i, batch in enumerate(loader):
            if tc.max_steps and step >= tc.max_steps:
                break
            if tc.schedule == "sgdr":
                sched.step(epoch + i / max(len(loader), 1))
            else:  # the pretraining arms' warm-up + cosine over the same number of steps
                for group in opt.param_groups:
                    group["lr"] = warmup_cosine(step, tc.max_steps or tc.epochs * len(loader), tc.lr, tc.warmup_fraction)
            x = torch.cat([batch["view1"], batch["view2"]]).to(device)
            target = y_rows[batch["window"]].repeat(2, 1).to(device)
            known = torch.isfinite(target)
            out = head(encoder(x))
            loss = nn.functional.binary_cross_entropy_with_logits(out[known], target[known]) if known.any() else out.sum() * 0
            opt.zero_grad()
            loss.backward()
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            step += 1
            examples += len(batch["window"])
            total, count = total + loss.item(), count + 1
        last = total / max(count, 1)
        if tc.max_steps and step >= tc.max_steps:
            break
    return encoder.cpu().eval(), {"steps": step, "examples": examples, "final_loss": last,
                            "seconds": time.perf_counter() - started}
