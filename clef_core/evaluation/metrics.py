"""Evaluation metrics: rank-based AUROC with ties, per-class sensitivity / positive predictivity,
MAE, R^2 and Spearman's rank correlation.

AUROC is the Mann-Whitney U statistic divided by n_pos * n_neg (Hanley & McNeil 1982):
    AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)
where R_pos is the sum of the positives' ranks among all scores, tied scores getting their
average rank; a positive tied with a negative therefore counts 1/2, as in the probabilistic
definition P(s+ > s-) + P(s+ = s-) / 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import rankdata

if TYPE_CHECKING:
    import pandas as pd


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for binary ``y`` (0/1 or bool); NaN unless both
    classes are present. Non-finite scores are an error (they have no rank)."""
    y = np.asarray(y).astype(bool).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != score.shape:
        raise ValueError(f"auroc: {y.shape[0]} labels but {score.shape[0]} scores")
    if not np.isfinite(score).all():
        raise ValueError("auroc: scores contain NaN or inf")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_chance_halfwidth(n_pos: int, n_neg: int, z: float = 1.959964) -> float:
    """Half-width of the central 95 % range of the AUROC of a score with no signal at all.

    Under H0 the Mann-Whitney U has variance n_pos n_neg (n_pos + n_neg + 1) / 12 (no ties), so
    AUROC = U / (n_pos n_neg) has SD sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)) (Hanley &
    McNeil 1982; Mann & Whitney 1947). An AUROC within 0.5 +- this half-width is what chance
    alone gives; NaN when a class is empty.
    """
    if n_pos <= 0 or n_neg <= 0:
        return math.nan
    return z * math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))


def auroc_ci95_halfwidth(value: float, n_pos: int, n_neg: int, z: float = 1.959964) -> float:
    """Half-width of the 95 % confidence interval of an observed AUROC ``value`` with Hanley &
    McNeil's (1982) standard error:
        SE^2 = (A(1-A) + (n_pos-1)(Q1-A^2) + (n_neg-1)(Q2-A^2)) / (n_pos n_neg),
        Q1 = A/(2-A),  Q2 = 2A^2/(1+A);
    NaN when a class is empty or ``value`` is NaN."""
    if n_pos <= 0 or n_neg <= 0 or not math.isfinite(value):
        return math.nan
    a = float(value)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return z * math.sqrt(max(var, 0.0))


def macro_auroc_ovr(y: np.ndarray, proba: np.ndarray) -> tuple[float, list[float]]:
    """Macro one-vs-rest AUROC of class scores ``proba`` (N, K) for integer labels ``y`` in 0..K-1:
    the mean over classes present with both signs, and the per-class values (NaN when undefined)."""
    y = np.asarray(y, dtype=np.int64)
    per_class = [auroc(y == k, proba[:, k]) for k in range(proba.shape[1])]
    defined = [v for v in per_class if not math.isnan(v)]
    return (float(np.mean(defined)) if defined else math.nan), per_class


def sensitivity_ppv(y: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per class k: sensitivity TP/(TP+FN), positive predictivity TP/(TP+FP) (NaN when the
    denominator is 0), and the counts (the AAMI EC57 / de Chazal 2004 reporting)."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    out = {}
    for k, name in enumerate(classes):
        tp = int(((pred == k) & (y == k)).sum())
        fn = int(((pred != k) & (y == k)).sum())
        fp = int(((pred == k) & (y != k)).sum())
        out[name] = {
            "sensitivity": tp / (tp + fn) if tp + fn else math.nan,
            "ppv": tp / (tp + fp) if tp + fp else math.nan,
            "n_true": tp + fn,
            "n_pred": tp + fp,
        }
    return out


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, np.float64) - np.asarray(pred, np.float64))))


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (can be negative; NaN for constant y)."""
    y = np.asarray(y, np.float64)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        return math.nan
    return 1.0 - float(((y - np.asarray(pred, np.float64)) ** 2).sum()) / ss_tot


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the average ranks (NaN when either side is constant)."""
    ra, rb = rankdata(np.asarray(a, np.float64)), rankdata(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


def mean_sd(values: pd.Series) -> str:
    """``mean ± SD`` of a results column over seeds / label subsamples (3 decimals; SD 0 for a single
    value): the cell of every mean-over-units table of the study and the benchmarks."""
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"
