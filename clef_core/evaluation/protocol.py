"""How a task is scored: patient-grouped cross-validation of a probe (pooled out-of-fold
predictions) or a fit/test split, and the metrics of each task kind.

* binary (multi-label): AUROC per label on the rows where the label is known; a label with fewer
  than ``min_per_class`` positives or negatives is reported as skipped; ``mean_auroc`` averages
  the scored labels.
* multiclass: per-class sensitivity and positive predictivity of the arg-max decision, macro
  one-vs-rest AUROC of the softmax, accuracy and the confusion matrix (rows true, columns predicted).
* regression: MAE, R^2, and the MAE of always predicting the training mean (the floor to beat).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from clef_core.evaluation.metrics import (
    auroc,
    auroc_chance_halfwidth,
    auroc_ci95_halfwidth,
    macro_auroc_ovr,
    mae,
    r2,
    sensitivity_ppv,
)
from clef_core.evaluation.probe import fit_probe
from clef_core.evaluation.splits import group_folds


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _strata(kind: str, y: np.ndarray, n_labels: int) -> np.ndarray | None:
    if kind == "binary":
        return y
    if kind == "multiclass":
        return np.eye(n_labels)[np.asarray(y, np.int64)]
    return None


def oof_decisions(features: np.ndarray, y: np.ndarray, kind: str, labels: Sequence[str], groups: np.ndarray,
                  *, folds: int, seed: int, l2: float, class_weight: str | None = None) -> np.ndarray:
    """Out-of-fold probe outputs (N, C): each row predicted by a probe fitted on the other
    groups' rows (groups dealt into ``folds`` folds, stratified by label)."""
    n_out = len(labels)
    out = np.full((len(y), n_out), np.nan)
    for test in group_folds(groups, folds, seed, _strata(kind, y, n_out)):
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(train) == 0:
            continue
        probe = fit_probe(features[train], y[train], kind, labels, l2, class_weight)
        out[test] = probe.decision(features[test])
    return out


def score(kind: str, labels: Sequence[str], y: np.ndarray, decision: np.ndarray, *, min_per_class: int = 5,
          train_mean: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of ``decision`` (N, C) (logits / predictions) against ``y`` for a task ``kind``."""
    done = np.isfinite(decision).all(axis=1)
    if kind == "binary":
        per_label: dict[str, Any] = {}
        for j, name in enumerate(labels):
            ok = done & np.isfinite(y[:, j])
            yj = y[ok, j]
            n_pos, n_neg = int(yj.sum()), int((1 - yj).sum())
            entry: dict[str, Any] = {"n_pos": n_pos, "n_neg": n_neg,
                                     "chance_95": auroc_chance_halfwidth(n_pos, n_neg)}
            if min(n_pos, n_neg) < min_per_class:
                entry["skipped"] = f"fewer than {min_per_class} positives or negatives"
            else:
                entry["auroc"] = auroc(yj, decision[ok, j])
                entry["ci_95"] = auroc_ci95_halfwidth(entry["auroc"], n_pos, n_neg)
            per_label[name] = entry
        scored = [v["auroc"] for v in per_label.values() if "auroc" in v]
        return {"mean_auroc": float(np.mean(scored)) if scored else math.nan, "labels": per_label}
    if kind == "multiclass":
        yk = np.asarray(y, np.int64)[done]
        proba = _softmax(decision[done])
        k = len(labels)
        pred = proba.argmax(axis=1)
        macro, per_class = macro_auroc_ovr(yk, proba)
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (yk, pred), 1)
        counts = [(int((yk == c).sum()), int((yk != c).sum())) for c in range(k)]
        chance = [auroc_chance_halfwidth(*n) for n in counts]
        ci = [auroc_ci95_halfwidth(a, *n) for a, n in zip(per_class, counts)]
        return {"macro_auroc": macro, "auroc": dict(zip(labels, per_class)), "chance_95": dict(zip(labels, chance)),
                "ci_95": dict(zip(labels, ci)),
                "classes": sensitivity_ppv(yk, pred, labels), "accuracy": float((pred == yk).mean()) if len(yk) else math.nan,
                "confusion": confusion.tolist(), "n": int(len(yk))}
    out = {}
    for j, name in enumerate(labels):
        yj, pj = y[done, j], decision[done, j]
        base = float(np.mean(yj)) if train_mean is None else float(train_mean[j])
        out[name] = {"mae": mae(yj, pj), "r2": r2(yj, pj), "mae_mean_predictor": mae(yj, np.full(len(yj), base)), "n": int(len(yj))}
    return {"mean_mae": float(np.mean([v["mae"] for v in out.values()])), "labels": out}


def chance_halfwidth(kind: str, metrics: dict[str, Any], key: str = "chance_95") -> float:
    """The mean over a task's scored labels (classes) of their ``chance_95`` (the 95 % spread of
    an AUROC with no signal) or ``ci_95`` (the 95 % CI of the observed AUROC): the width of the
    mean AUROC's interval if its labels were fully correlated, an upper bound. NaN for regression."""
    if kind == "binary":
        values = [v[key] for v in metrics["labels"].values() if "auroc" in v]
    elif kind == "multiclass":
        values = [h for h, a in zip(metrics[key].values(), metrics["auroc"].values()) if not math.isnan(a)]
    else:
        return math.nan
    return float(np.mean(values)) if values else math.nan


def headline(kind: str, metrics: dict[str, Any]) -> tuple[str, float]:
    """The one number a table shows for a task: (name, value)."""
    key = {"binary": "mean_auroc", "multiclass": "macro_auroc", "regression": "mean_mae"}[kind]
    return key, float(metrics.get(key, math.nan))
