"""The operating point of a binary head: a threshold for a stated sensitivity, measured on groups
it was not chosen on."""

from __future__ import annotations

import numpy as np

from clef_core.evaluation.calibration import fit_platt, platt_calibration, sigmoid
from clef_core.evaluation.operating_point import operating_point, threshold_at_sensitivity


def test_threshold_reaches_the_target_sensitivity() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([5.0, 4.0, 3.0, -2.0, 3.5, 1.0, 0.0, -1.0, -3.0, -4.0])
    assert threshold_at_sensitivity(y, score, 0.75) == 3.0  # 3 of 4 positives at >= 3.0
    assert threshold_at_sensitivity(y, score, 1.0) == -2.0
    assert np.isnan(threshold_at_sensitivity(np.zeros(3), np.zeros(3), 0.9))


def test_operating_point_is_measured_on_groups_it_was_not_chosen_on() -> None:
    """Scores far below 0.5 (the unseen-record case of issue 22) still get a useful threshold,
    and the measured sensitivity is an honest, leave-one-group-out figure."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 40)
    y = (rng.random(400) < 0.3).astype(int)
    score = -4.0 + 1.5 * y + rng.standard_normal(400)  # sigmoid < 0.5 almost everywhere
    op = operating_point(y, score, groups, 0.9)
    assert 0.8 < op["sensitivity"] <= 1.0 and 0.3 < op["specificity"] < 0.9
    assert op["n_pos"] + op["n_neg"] == 400 and op["calibrated"]
    # the threshold is on the calibrated probability: the same decisions as the logit threshold
    a, b = op["calibration"]["a"], op["calibration"]["b"]
    assert np.array_equal(sigmoid(a * score + b) >= op["probability_threshold"], score >= op["threshold"])
    # chance scores: the threshold still flags ~90 % of positives, and as many negatives
    noise = operating_point(y, rng.standard_normal(400), groups, 0.9)
    assert abs(noise["sensitivity"] - (1 - noise["specificity"])) < 0.15


def test_platt_recovers_a_known_map_and_calibrates_out_of_fold() -> None:
    """Labels drawn from p = sigmoid(2 z - 3): Platt finds (2, -3); the raw sigmoid of z (all AF
    windows below 0.5, as on issue 22's unseen records) is badly calibrated, the leave-one-group-out
    calibrated probability is not (Brier and log loss both drop)."""
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 1.5, 4000)
    y = (rng.random(4000) < sigmoid(2.0 * z - 3.0)).astype(int)
    a, b = fit_platt(y, z)
    assert abs(a - 2.0) < 0.25 and abs(b + 3.0) < 0.3
    cal = platt_calibration(y, z, np.repeat(np.arange(20), 200))
    assert cal["n_records"] == 20 and cal["n_windows"] == 4000
    assert cal["brier_after"] < cal["brier_before"] - 0.02 and cal["log_loss_after"] < cal["log_loss_before"]
    # the calibrated mean probability matches the positive rate, the raw one does not
    assert abs(sigmoid(a * z + b).mean() - y.mean()) < 0.01 < abs(sigmoid(z).mean() - y.mean())


def test_no_calibration_for_one_class_or_a_reversed_score() -> None:
    groups = np.repeat(np.arange(4), 25)
    assert platt_calibration(np.zeros(100), np.arange(100.0), groups) is None
    y = (np.arange(100) < 30).astype(int)
    assert platt_calibration(y, np.arange(100.0), groups) is None  # positives have the lowest scores
    op = operating_point(y, -np.arange(100.0), groups, 0.9)
    assert op["calibrated"] and op["calibration"]["a"] > 0
