"""The operating point of a binary head: a threshold for a stated sensitivity, measured on groups
it was not chosen on."""

from __future__ import annotations

import numpy as np

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
    assert op["probability_threshold"] < 0.2 and op["n_pos"] + op["n_neg"] == 400 and not op["calibrated"]
    # chance scores: the threshold still flags ~90 % of positives, and as many negatives
    noise = operating_point(y, rng.standard_normal(400), groups, 0.9)
    assert abs(noise["sensitivity"] - (1 - noise["specificity"])) < 0.15
