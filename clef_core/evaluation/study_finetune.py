"""The fine-tune protocol of ``clef study`` (issue 12, item 3): beside the frozen probe, each arm's
encoder (``untrained``: training from scratch) plus a linear head trained end to end
(:func:`clef_core.evaluation.finetune.finetune`) on the same labelled patients as the probe.

For every arm with an encoder, seed, fraction f in ``study.finetune_fractions`` and subsample
j < ``study.finetune_subsamples``: the labelled rows are the probe's (subsample j of the pool at f);
``study.finetune_steps`` optimizer steps of ``study.finetune_batch`` windows (so every fraction
gets the same compute: many epochs of few patients, few of many), AdamW at ``study.finetune_lr``
(the head 10x), the epoch kept is the one with the best mean validation AUROC over the labels,
checked ``study.finetune_checks`` times along the run; test scores are the logits on the test
patients. Each unit is cached in ``arms/<arm>_s<seed>/finetune/f<f>_j<j>.npz`` with the settings
it was made with (other settings are refused, as for the embeddings).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from clef_core.evaluation.label_efficiency import subsample_patients, weighted_auroc


def finetune_epochs(n_rows: int, steps: int, batch: int) -> int:
    """Epochs over ``n_rows`` labelled windows that make at least ``steps`` optimizer steps of ``batch``."""
    per_epoch = max(math.ceil(n_rows / batch), 1)
    return max(math.ceil(steps / per_epoch), 1)


def mean_val_auroc(decide, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Mean AUROC over the labels with both classes among the validation rows (NaN if none)."""
    out = decide(x_val)
    values = []
    for c in range(y_val.shape[1]):
        known = np.isfinite(y_val[:, c])
        values.append(weighted_auroc(out[known, c], y_val[known, c])[0])
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def finetune_unit(encoder, task, pool, val, test, frac: float, j: int, seed: int, study
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Fine-tune ``encoder`` on subsample ``j`` of the pool at ``frac``; (test logits (n_test, C), rows)."""
    from clef_core.evaluation.finetune import FinetuneConfig, finetune

    rows_pool = np.flatnonzero(pool)
    fit_rows = rows_pool[subsample_patients(task.groups[pool], frac, j, study.eval_seed, study.min_patients)]
    epochs = finetune_epochs(len(fit_rows), study.finetune_steps, study.finetune_batch)
    cfg = FinetuneConfig(epochs=epochs, lr=study.finetune_lr, batch_size=study.finetune_batch, seed=1000 * seed + j)
    x_val, y_val = task.x[val], task.y[val]
    tuned = finetune(encoder, task.x[fit_rows], task.y[fit_rows], "binary", task.labels, cfg,
                     select=lambda decide: mean_val_auroc(decide, x_val, y_val),
                     select_every=max(epochs // study.finetune_checks, 1))
    val_out, test_out = tuned.decision(x_val), tuned.decision(task.x[test])
    n_patients = int(len(np.unique(task.groups[fit_rows])))
    rows = []
    for c, label in enumerate(task.labels):
        kv, kt = np.isfinite(y_val[:, c]), np.isfinite(task.y[test, c])
        rows.append({"fraction": frac, "subsample": j, "label": label,
                     "auroc": float(weighted_auroc(test_out[kt, c], task.y[test, c][kt])[0]),
                     "val_auroc": float(weighted_auroc(val_out[kv, c], y_val[kv, c])[0]),
                     "epoch": tuned.best_epoch, "epochs": epochs, "train_patients": n_patients,
                     "train_positives": int(np.nansum(task.y[fit_rows, c]))})
    return test_out, rows


def cached_unit(path: Path, key: str, make) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``make()`` -> (scores, rows), stored in ``path`` with ``key``; a stored unit with another key is refused."""
    if path.is_file():
        saved = np.load(path, allow_pickle=False)
        if str(saved["config"]) != key:
            raise ValueError(f"{path} was made with other settings than this study's; use another --out")
        return saved["scores"], json.loads(str(saved["rows"]))
    scores, rows = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, scores=scores, rows=json.dumps(rows), config=key)
    tmp.replace(path)
    return scores, rows
