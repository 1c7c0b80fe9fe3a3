"""The label-efficiency protocol of ``clef study``: patient splits, nested label subsamples, a frozen
linear probe whose L2 is chosen on validation, and a paired bootstrap of AUROC differences.

* :func:`three_way_split`: subjects -> pool / validation / test (fixed by a seed, the same for every
  arm, so arms are compared on the same patients).
* :func:`subsample_patients`: subsample j of the pool is a fixed random order of its subjects; the
  fraction f takes its first max(ceil(f n_pool), min_patients) subjects, so subsets are nested and
  every arm sees the same labelled patients.
* :func:`fit_logistic_grid`: the logistic regression of every (L2, label), mean_{known rows}
  BCE(x w_gc + b_gc, y_c) + l2_g / (2 n_c) ||w_gc||^2 (the objective of
  :func:`clef_core.evaluation.probe.fit_logistic`), by damped Newton warm-started from the next
  stronger L2 (converged in a few steps; L-BFGS on nearly separable small samples needed hundreds).
  A label with one class among the labelled rows gets w = 0 (a constant score: AUROC 0.5).
* :func:`weighted_auroc`: the Mann-Whitney AUROC with per-row weights, for B weight vectors at once
  (ties count 1/2); a bootstrap resample of patients is a weight vector of multiplicities.
* :func:`paired_bootstrap`: the mean over units (seed x label subsample) of the paired difference
  headline(A) - headline(B), with a percentile CI from resampling units *and* test patients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def three_way_split(groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row masks (pool, val, test) that never split a subject."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"study: val_fraction {val_fraction} and test_fraction {test_fraction} must be in (0, 1) "
                         "with a sum below 1")
    subjects = np.unique(np.asarray(groups).astype(str))
    order = np.random.default_rng([seed, 0x5917]).permutation(subjects)
    n_test, n_val = round(test_fraction * len(order)), round(val_fraction * len(order))
    g = np.asarray(groups).astype(str)
    test = np.isin(g, order[:n_test])
    val = np.isin(g, order[n_test:n_test + n_val])
    return ~(test | val), val, test


def subsample_patients(pool_groups: np.ndarray, fraction: float, subsample: int, seed: int,
                       min_patients: int) -> np.ndarray:
    """Row mask over the pool rows: the first n_f subjects of subsample ``subsample``'s order."""
    g = np.asarray(pool_groups).astype(str)
    subjects = np.unique(g)
    order = np.random.default_rng([seed, 0x5AB, subsample]).permutation(subjects)
    n = min(len(subjects), max(math.ceil(fraction * len(subjects)), min_patients))
    return np.isin(g, order[:n])


def fit_logistic_grid(x: np.ndarray, y: np.ndarray, l2_grid: Sequence[float], iters: int = 50
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(W (G, C, d), b (G, C)) for standardised ``x`` (n, d) and ``y`` (n, C) 0/1/NaN: for each label c
    and L2 value g, the minimiser of mean_{known rows} BCE(x w + b, y_c) + l2_g / (2 n_c) ||w||^2."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x1 = torch.as_tensor(np.c_[x, np.ones(len(x))])
    W, B = np.zeros((len(l2_grid), y.shape[1], x.shape[1])), np.zeros((len(l2_grid), y.shape[1]))
    for c in range(y.shape[1]):
        known = np.isfinite(y[:, c])
        yc = y[known, c]
        if len(np.unique(yc)) < 2:  # one class: w = 0 and the (clipped) prevalence as bias
            p = float(np.clip(yc.mean(), 1e-3, 1 - 1e-3)) if len(yc) else 0.5
            B[:, c] = math.log(p / (1 - p))
            continue
        beta = torch.zeros(x1.shape[1], dtype=torch.float64)
        beta[-1] = math.log(yc.mean() / (1 - yc.mean()))
        for g in np.argsort(l2_grid)[::-1]:  # strongest L2 first: each fit warm-starts the next
            beta = newton_logistic(x1[known], torch.as_tensor(yc), float(l2_grid[g]), beta, iters)
            W[g, c], B[g, c] = beta[:-1].numpy(), float(beta[-1])
    return W, B


def newton_logistic(x1: torch.Tensor, y: torch.Tensor, l2: float, beta: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Damped Newton (Armijo backtracking) for mean BCE + l2 / (2 n) ||w||^2, the last column of
    ``x1`` the unpenalised bias; strictly convex for l2 > 0, so it converges in a few steps."""
    n = len(y)
    reg = torch.full((x1.shape[1],), l2 / n, dtype=torch.float64)
    reg[-1] = 0.0

    def objective(b: torch.Tensor) -> torch.Tensor:
        z = x1 @ b
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 0.5 * (reg * b * b).sum()

    f = objective(beta)
    for _ in range(iters):
        p = torch.sigmoid(x1 @ beta)
        grad = x1.T @ (p - y) / n + reg * beta
        if float(grad.abs().max()) < 1e-9:
            break
        hess = (x1.T * (p * (1 - p))) @ x1 / n + torch.diag(reg + 1e-12)
        step = torch.linalg.solve(hess, grad)
        t, decrease = 1.0, float(grad @ step)
        while True:
            cand = beta - t * step
            f_cand = objective(cand)
            if float(f_cand) <= float(f) - 1e-4 * t * decrease or t < 1e-10:
                break
            t *= 0.5
        beta, f = cand, f_cand
    return beta


def weighted_auroc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC of ``scores`` (n,) for 0/1 ``y`` (n,) under row weights (B, n) (None: one unit vector);
    returns (B,), NaN where a class has zero weight."""
    s, y = np.asarray(scores, np.float64), np.asarray(y, np.float64)
    w = np.ones((1, len(s))) if weights is None else np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # tie groups of equal scores
    pos = np.add.reduceat(w * (y == 1), starts, axis=1)
    neg = np.add.reduceat(w * (y == 0), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def headline_auroc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean over labels (columns) of the weighted AUROC on each label's known rows, (B,)."""
    values = []
    for j in range(y.shape[1]):
        known = np.isfinite(y[:, j])
        wj = None if weights is None else np.atleast_2d(weights)[:, known]
        values.append(weighted_auroc(scores[known, j], y[known, j], wj))
    return np.nanmean(np.stack(values), axis=0)


def paired_bootstrap(scores_a: Sequence[np.ndarray], scores_b: Sequence[np.ndarray], y: np.ndarray,
                     patients: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Paired difference of headline AUROC, arm A - arm B, over matched units (lists of (n, C) test
    scores, unit k of A paired with unit k of B, same test rows ``y``). Returns the mean difference,
    the 2.5 / 97.5 % bootstrap percentiles (units and test patients resampled) and the share of
    bootstrap means above 0."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError("paired_bootstrap: needs the same, non-zero number of units on both sides")
    rng = np.random.default_rng([seed, 0xB007])
    subjects, inverse = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    counts = rng.multinomial(len(subjects), np.full(len(subjects), 1 / len(subjects)), size=n_boot)
    weights = counts[:, inverse].astype(np.float64)  # (B, n): a record weighs its patient's multiplicity
    diffs = np.stack([headline_auroc(a, y, weights) - headline_auroc(b, y, weights)
                      for a, b in zip(scores_a, scores_b)], axis=1)  # (B, U)
    point = float(np.mean([headline_auroc(a, y)[0] - headline_auroc(b, y)[0] for a, b in zip(scores_a, scores_b)]))
    units = rng.integers(0, diffs.shape[1], size=diffs.shape)
    boot = np.take_along_axis(diffs, units, axis=1).mean(axis=1)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"diff": point, "ci_low": float(lo), "ci_high": float(hi), "p_above_0": float(np.mean(boot > 0)),
            "units": len(scores_a)}
