"""An operating point for a binary head: the threshold that reaches a stated sensitivity.

A linear probe's sigmoid ranks windows (its AUROC) but its 0.5 is not a decision threshold: fitted
on few patients, the probabilities of an unseen record can all sit far below 0.5 (issue 22: AF
windows of unseen records, AUROC 0.73, none above 0.5). So a binary head ships with

* ``threshold``: chosen on the out-of-fold (validation) decisions as the highest score that
  still flags ``target_sensitivity`` of the positives (sensitivity = TP / P, specificity = TN / N);
* ``sensitivity`` / ``specificity`` measured honestly: each record group is classified with the
  threshold chosen on the *other* groups' out-of-fold decisions (the group and its threshold never
  meet), pooled over groups.

* ``calibration``: a Platt map ``p = sigmoid(a * logit + b)`` fitted on the same out-of-fold
  decisions (evaluation/calibration.py), with its Brier score / log loss before and after measured
  leave-one-group-out; ``probability_threshold`` is then the threshold on that calibrated
  probability (the map is increasing, so the decisions are the same as on the logit). Where no map
  can be fitted the score stays a ranking score (``calibrated: false``) and the device says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from clef_core.evaluation.calibration import platt_calibration, sigmoid


def threshold_at_sensitivity(y: np.ndarray, score: np.ndarray, target: float) -> float:
    """The largest threshold ``t`` with ``mean(score[y == 1] >= t) >= target`` (NaN without positives)."""
    pos = np.sort(np.asarray(score, np.float64)[np.asarray(y) == 1])[::-1]
    if not len(pos):
        return float("nan")
    return float(pos[max(1, math.ceil(target * len(pos))) - 1])


def operating_point(y: np.ndarray, score: np.ndarray, groups: np.ndarray, target: float) -> dict[str, Any]:
    """The operating point of out-of-fold decisions ``score`` (logits) for 0/1 labels ``y``
    (module docstring); ``threshold`` (on the logit) and ``probability_threshold`` (on the calibrated
    probability, or the raw sigmoid where no calibration could be fitted) are the ones to ship."""
    y, score, groups = np.asarray(y).astype(int), np.asarray(score, np.float64), np.asarray(groups)
    flagged = np.zeros(len(y), dtype=bool)
    measured = np.zeros(len(y), dtype=bool)
    for g in np.unique(groups):
        inside = groups == g
        t = threshold_at_sensitivity(y[~inside], score[~inside], target)
        if not math.isnan(t):
            flagged[inside] = score[inside] >= t
            measured[inside] = True
    t = threshold_at_sensitivity(y, score, target)
    pos, neg = measured & (y == 1), measured & (y == 0)
    cal = platt_calibration(y, score, groups)
    a, b = (cal["a"], cal["b"]) if cal else (1.0, 0.0)
    return {
        "target_sensitivity": target,
        "threshold": t,
        "probability_threshold": float(sigmoid(np.asarray(a * t + b, np.float64))) if not math.isnan(t) else None,
        "sensitivity": float(flagged[pos].mean()) if pos.any() else None,
        "specificity": float((~flagged[neg]).mean()) if neg.any() else None,
        "n_pos": int(pos.sum()),
        "n_neg": int(neg.sum()),
        "chosen_on": "out-of-fold decisions of the grouped cross-validation",
        "measured_on": "each record group with the threshold chosen on the other groups",
        "calibrated": cal is not None,
        "calibration": cal,
    }
