"""Server-side linear probe of the global encoder on a held-out labelled cohort.

Each held-out record's first window (one lead, z-scored) is embedded by the frozen encoder; for
every binary label with enough positives and negatives an L2-regularised logistic regression
(features standardised on the training folds) is fitted in patient-grouped K-fold
cross-validation and scored by AUROC on the pooled out-of-fold predictions. AUROC is the
Mann-Whitney statistic with average ranks for ties (Hanley & McNeil 1982). The reported
``probe_auroc`` is the mean over the scored labels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

MIN_PER_CLASS = 4
# ridge strength for probe sets of ~100 patients and 256-d embeddings (C = 0.01)
L2 = 100.0


@dataclasses.dataclass
class ProbeSet:
    """Held-out windows ``x`` (N, T) z-scored, labels ``y`` (N, C) (NaN = unknown), patient ``groups``."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    labels: list[str]

    @classmethod
    def from_site(cls, site: Any, lead: str = "I", labels: Sequence[str] | None = None) -> ProbeSet | None:
        """From a prepared held-out site (``clef_core.pipeline.PreparedSite``); None without labels."""
        from clef_core.data.datasets import LabelledWindows

        table = site.labels
        if table is None:
            return None
        candidates = [c for c in table.columns if c not in ("study_id", "subject_id", "record_id")]
        binary = [c for c in candidates if set(np.unique(table[c].dropna())) <= {0, 1}]
        chosen = [c for c in (labels or binary) if c in binary]
        if not chosen:
            return None
        windows = LabelledWindows(site.store, table, chosen, lead=lead, first_window_only=True)
        x, y, groups = windows.to_numpy()
        return cls(x, y, groups, chosen)


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for binary ``y`` (NaN without both classes)."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def grouped_folds(groups: np.ndarray, y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Test-row indices of ``k`` folds that never split a patient and spread the positive
    patients evenly (as scikit-learn's StratifiedGroupKFold): pooled out-of-fold scores are then
    not biased by folds whose class balance differs from their training folds'."""
    unique, inverse = np.unique(groups, return_inverse=True)
    positive = np.zeros(len(unique), dtype=bool)
    np.logical_or.at(positive, inverse, np.asarray(y) > 0.5)
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    start = 0
    for members in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        members = rng.permutation(members)
        fold_of_group[members] = (start + np.arange(len(members))) % k
        start += len(members)
    fold = fold_of_group[inverse]
    return [np.flatnonzero(fold == f) for f in range(k) if (fold == f).any()]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 100) -> tuple[np.ndarray, float]:
    """Weights, bias minimising mean binary cross-entropy + ``l2``/(2N) ||w||^2 (LBFGS); i.e.
    scikit-learn's ``LogisticRegression(C=1/l2)`` on standardised features."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + 0.5 * l2 * (w @ w) / len(yt)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def probe_scores(features: np.ndarray, probe: ProbeSet, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """``probe_auroc`` (mean) and ``probe_auroc.<label>`` for each label with enough of both classes,
    with the label's scored positives and negatives (``probe_pos.<label>``, ``probe_neg.<label>``)."""
    out: dict[str, float] = {}
    for j, label in enumerate(probe.labels):
        known = np.isfinite(probe.y[:, j])
        y = probe.y[known, j]
        if min(int(y.sum()), int((1 - y).sum())) < MIN_PER_CLASS:
            continue
        x, groups = features[known], probe.groups[known]
        scores = np.full(len(y), np.nan)
        for test in grouped_folds(groups, y, folds, seed):
            train = np.setdiff1d(np.arange(len(y)), test)
            if len(np.unique(y[train])) < 2:
                continue
            mean, std = x[train].mean(0), x[train].std(0) + 1e-6
            w, b = fit_logistic((x[train] - mean) / std, y[train])
            scores[test] = ((x[test] - mean) / std) @ w + b
        scored = np.isfinite(scores)
        value = auroc(y[scored], scores[scored])
        if math.isfinite(value):
            out[f"probe_auroc.{label}"] = value
            out[f"probe_pos.{label}"] = float(y[scored].sum())  # the counts behind the AUROC's error bar
            out[f"probe_neg.{label}"] = float((1 - y[scored]).sum())
    per_label = [v for k, v in out.items() if k.startswith("probe_auroc.")]
    if per_label:
        out["probe_auroc"] = float(np.mean(per_label))
    return out


@torch.no_grad()
def embed(encoder: nn.Module, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """Embeddings (N, D) of single-lead windows ``x`` (N, T)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    parts = [encoder(torch.as_tensor(x[i:i + batch, None, :], dtype=torch.float32, device=device)).cpu().numpy()
             for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def linear_probe(encoder: nn.Module, probe: ProbeSet, folds: int = 5, seed: int = 0) -> dict[str, float]:
    return probe_scores(embed(encoder, probe.x), probe, folds, seed)
