"""Platt scaling of a binary head's logit, fitted on out-of-fold decisions.

A linear probe's sigmoid ranks windows but its values are not probabilities of an unseen record
(issue 22: AF windows of unseen records all below 0.4). Platt scaling (Platt 1999, "Probabilistic
outputs for support vector machines") maps the logit ``z`` to

    p = 1 / (1 + exp(-(a * z + b)))

with ``a, b`` the maximum-likelihood logistic fit of the labels on ``z``, using Platt's smoothed
targets ``t+ = (N+ + 1) / (N+ + 2)``, ``t- = 1 / (N- + 2)`` against over-confidence. ``z`` are the
out-of-fold decisions of the record-grouped cross-validation, so the map is fitted on records the
head (of that fold) never saw; its effect is measured leave-one-group-out: each group's windows are
calibrated with ``a, b`` fitted on the other groups, and the Brier score
``mean((p - y)^2)`` and log loss ``-mean(y log p + (1 - y) log(1 - p))`` are reported for the raw
sigmoid (before) and the calibrated probability (after).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_EPS = 1e-12


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def fit_platt(y: np.ndarray, z: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """``(a, b)`` of the Platt map for 0/1 labels ``y`` and logits ``z`` (Newton-Raphson with a
    backtracking line search on the smoothed-target log loss); needs both classes."""
    y, z = np.asarray(y, np.float64), np.asarray(z, np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"Platt scaling needs both classes (got {n_pos:g} positive, {n_neg:g} negative)")
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = np.stack([z, np.ones_like(z)], axis=1)

    def loss(w: np.ndarray) -> float:  # sum(log(1 + e^s) - t s), stable
        s = x @ w
        return float(np.sum(np.logaddexp(0.0, s) - t * s))

    w = np.array([0.0, math.log((n_pos + 1) / (n_neg + 1))])
    f = loss(w)
    for _ in range(iterations):  # Newton with backtracking (Lin, Lin & Weng 2007)
        p = sigmoid(x @ w)
        grad = x.T @ (p - t)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-10 and loss(w - size * step) > f - 1e-4 * size * float(grad @ step):
            size /= 2
        if size <= 1e-10:
            break
        w, f = w - size * step, loss(w - size * step)
        if np.abs(size * step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p) - np.asarray(y)) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def platt_calibration(y: np.ndarray, z: np.ndarray, groups: np.ndarray) -> dict[str, Any] | None:
    """The Platt map fitted on all out-of-fold logits ``z`` and its leave-one-group-out Brier score
    and log loss before/after (module docstring); None when it cannot be fitted (one class only,
    or a slope ``a <= 0``: the scores rank the wrong way and a calibration would flip the head)."""
    y, z, groups = np.asarray(y).astype(int), np.asarray(z, np.float64), np.asarray(groups)
    if y.min(initial=1) == y.max(initial=0):
        return None
    a, b = fit_platt(y, z)
    if a <= 0:
        return None
    p_oof = np.full(len(y), np.nan)
    for g in np.unique(groups):
        inside = groups == g
        if len(np.unique(y[~inside])) == 2:
            ga, gb = fit_platt(y[~inside], z[~inside])
            p_oof[inside] = sigmoid(ga * z[inside] + gb)
    measured = np.isfinite(p_oof)
    raw = sigmoid(z)
    return {
        "method": "platt", "a": a, "b": b,
        "n_records": int(len(np.unique(groups))), "n_windows": int(len(y)),
        "fitted_on": "out-of-fold decisions of the record-grouped cross-validation",
        "brier_before": brier(y[measured], raw[measured]), "brier_after": brier(y[measured], p_oof[measured]),
        "log_loss_before": log_loss(y[measured], raw[measured]),
        "log_loss_after": log_loss(y[measured], p_oof[measured]),
        "measured_on": "each record group calibrated with the map fitted on the other groups",
    }
