"""The label-efficiency protocol of ``clef study``: patient splits, nested label subsamples, a frozen
linear probe whose L2 is chosen on validation, and a paired bootstrap of AUROC differences.

* :func:`three_way_split`: subjects -> pool / validation / test (fixed by a seed, the same for every
  arm, so arms are compared on the same patients).
* :func:`subsample_patients`: subsample j of the pool is a fixed random order of its subjects; the
  fraction f takes its first max(ceil(f n_pool), min_patients) subjects, so subsets are nested and
  every arm sees the same labelled patients.
* :func:`fit_logistic_grid`: every (L2, label) logistic regression at once, minimising
  sum_{g,c} [ mean_{known rows} BCE(x w_gc + b_gc, y_c) + l2_g / (2 n_c) ||w_gc||^2 ] (separable, so
  one L-BFGS run solves all of them; the objective of :func:`clef_core.evaluation.probe.fit_logistic`).
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


def fit_logistic_grid(x: np.ndarray, y: np.ndarray, l2_grid: Sequence[float], iters: int = 150
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(W (G, C, d), b (G, C)) for standardised ``x`` (n, d) and ``y`` (n, C) 0/1/NaN."""
    xt = torch.as_tensor(np.asarray(x, np.float64))
    y = np.asarray(y, np.float64)
    known = np.isfinite(y)
    yt, kt = torch.as_tensor(np.nan_to_num(y)), torch.as_tensor(known, dtype=torch.float64)
    n_c = torch.as_tensor(np.maximum(known.sum(axis=0), 1), dtype=torch.float64)
    l2 = torch.as_tensor(np.asarray(l2_grid, np.float64))
    g, c, d = len(l2_grid), y.shape[1], x.shape[1]
    prev = np.clip(np.nansum(y, axis=0) / np.maximum(known.sum(axis=0), 1), 1e-3, 1 - 1e-3)
    w = torch.zeros((g, c, d), dtype=torch.float64, requires_grad=True)
    b = torch.as_tensor(np.tile(np.log(prev / (1 - prev)), (g, 1))).requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = torch.einsum("nd,gcd->gnc", xt, w) + b[:, None, :]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt.expand_as(logits), reduction="none")
        loss = ((bce * kt).sum(dim=1) / n_c + 0.5 * l2[:, None] * (w * w).sum(dim=2) / n_c).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W, B = w.detach().numpy().copy(), b.detach().numpy().copy()
    one_class = np.array([len(np.unique(y[known[:, j], j])) < 2 for j in range(c)])
    W[:, one_class, :] = 0.0
    return W, B


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
