"""Linear probes on frozen embeddings: L2-regularised logistic regression (one per binary
label, or multinomial for single-label classes) and ridge regression, all on standardised
features (train-side mean and standard deviation).

Objective (binary, per label): mean BCE(x w + b, y) + l2 / (2 N) ||w||^2, i.e. scikit-learn's
``LogisticRegression(C=1/l2)``; multinomial: the (optionally class-weighted) mean
cross-entropy + l2 / (2 N) ||W||_F^2; ridge: sum (y - x w - b)^2 / 2 + l2 ||w||^2 / 2 on a
standardised target, solved in closed form. Logistic fits use full-batch L-BFGS (strong Wolfe)
in float64. A fitted probe folds its standardisation into one ``nn.Linear`` for the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

KINDS = ("binary", "multiclass", "regression")
ACTIVATION = {"binary": "sigmoid", "multiclass": "softmax", "regression": "identity"}


@dataclasses.dataclass
class LinearProbe:
    """``outputs(x) = ((x - mean) / std) @ weight.T + bias`` (then ``* y_std + y_mean`` for regression)."""

    kind: str
    labels: list[str]
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # (C, d)
    bias: np.ndarray  # (C,)
    y_mean: np.ndarray | None = None  # regression target scaling, (C,)
    y_std: np.ndarray | None = None

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Logits (classification) or predictions in target units (regression), (N, C)."""
        out = ((np.asarray(x, np.float64) - self.mean) / self.std) @ self.weight.T + self.bias
        if self.kind == "regression":
            out = out * self.y_std + self.y_mean
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.decision(x)
        if self.kind == "binary":
            return 1.0 / (1.0 + np.exp(-z))
        if self.kind == "multiclass":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        raise ValueError("predict_proba: a regression probe has no probabilities")

    def to_linear(self) -> nn.Linear:
        """One ``nn.Linear`` on raw embeddings equal to :meth:`decision` (standardisation and
        target scaling folded in: W' = s W / std, b' = s (b - W mean / std) + m)."""
        w = self.weight / self.std
        b = self.bias - w @ self.mean
        if self.kind == "regression":
            assert self.y_std is not None and self.y_mean is not None  # fit_probe sets both for regression
            w, b = w * self.y_std[:, None], b * self.y_std + self.y_mean
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        return lin

    @property
    def activation(self) -> str:
        return ACTIVATION[self.kind]


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per feature; a constant feature gets std 1 (it then contributes nothing)."""
    x = np.asarray(x, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


def _lbfgs(params: list[torch.Tensor], loss_fn, iters: int) -> None:
    opt = torch.optim.LBFGS(params, max_iter=iters, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 200) -> tuple[np.ndarray, float]:
    """(w, b) minimising mean BCE + l2/(2N) ||w||^2 on (already standardised) ``x``; a label with
    one class only gets w = 0 and the bias of its (clipped) prevalence."""
    y = np.asarray(y, np.float64)
    if y.min() == y.max():
        p = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        return np.zeros(x.shape[1]), math.log(p / (1 - p))
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    p0 = float(y.mean())
    b = torch.tensor(math.log(p0 / (1 - p0)), dtype=torch.float64, requires_grad=True)
    n = len(yt)
    _lbfgs([w, b], lambda: nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + 0.5 * l2 * (w @ w) / n, iters)
    return w.detach().numpy(), float(b.detach())


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, class_weight: np.ndarray | None = None,
                iters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(W (K, d), b (K,)) minimising the (class-weighted) mean cross-entropy + l2/(2N) ||W||^2."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y, np.int64))
    weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float64)
    W = torch.zeros((n_classes, x.shape[1]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    n = len(yt)
    _lbfgs([W, b], lambda: nn.functional.cross_entropy(xt @ W.T + b, yt, weight=weight) + 0.5 * l2 * (W * W).sum() / n, iters)
    return W.detach().numpy(), b.detach().numpy()


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """(w, b) of ridge regression on centred ``x``: w = (X'X + l2 I)^-1 X'(y - mean y)."""
    xc = x - x.mean(axis=0)
    w = np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ (y - y.mean()))
    return w, float(y.mean() - x.mean(axis=0) @ w)


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """N / (K n_k) for present classes (as scikit-learn's class_weight="balanced"); 0 for absent ones."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    labels: Sequence[str],
    l2: float = 100.0,
    class_weight: str | None = None,
) -> LinearProbe:
    """Fit a probe on embeddings ``x`` (N, d).

    ``binary``: ``y`` (N, C) of 0/1 with NaN for unknown (each label fitted on its known rows);
    ``multiclass``: ``y`` (N,) integers 0..len(labels)-1 (``class_weight="balanced"`` reweights);
    ``regression``: ``y`` (N, C) real, no NaN.
    """
    if kind not in KINDS:
        raise ValueError(f"fit_probe: kind {kind!r} is not one of {KINDS}")
    x = np.asarray(x, np.float64)
    mean, std = standardise(x)
    xs = (x - mean) / std
    labels = [str(label) for label in labels]
    if kind == "multiclass":
        y = np.asarray(y, np.int64).ravel()
        cw = balanced_weights(y, len(labels)) if class_weight == "balanced" else None
        W, b = fit_softmax(xs, y, len(labels), l2, cw)
        return LinearProbe(kind, labels, mean, std, W, b)
    y = np.asarray(y, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.shape[1] != len(labels):
        raise ValueError(f"fit_probe: {y.shape[1]} target columns but {len(labels)} labels")
    W, b = np.zeros((len(labels), x.shape[1])), np.zeros(len(labels))
    if kind == "binary":
        for j in range(len(labels)):
            known = np.isfinite(y[:, j])
            if not known.any():
                raise ValueError(f"fit_probe: label '{labels[j]}' has no known value")
            W[j], b[j] = fit_logistic(xs[known], y[known, j], l2)
        return LinearProbe(kind, labels, mean, std, W, b)
    if not np.isfinite(y).all():
        raise ValueError("fit_probe: regression targets contain NaN")
    y_mean, y_std = standardise(y)
    ys = (y - y_mean) / y_std
    for j in range(len(labels)):
        W[j], b[j] = fit_ridge(xs, ys[:, j], l2)
    return LinearProbe(kind, labels, mean, std, W, b, y_mean, y_std)
