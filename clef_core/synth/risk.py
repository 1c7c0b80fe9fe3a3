"""True SCORE2 risk of synthetic patients, and the high-risk label's cut-offs.

The formula is the project's one SCORE2 / SCORE2-OP implementation (:mod:`clef_core.score2`,
Eur Heart J 2021;42:2439-54 and 2455-67), so the synthetic truth and the extractor agree by
construction: risk fraction, NaN outside ages 40-89.
"""

from __future__ import annotations

import numpy as np

from clef_core.score2 import REGIONS, score2_core

__all__ = ["REGIONS", "high_risk_threshold", "score2_risk"]


def score2_risk(age, male, sbp, tchol, hdl, smoking, diabetes, region: str = "low") -> np.ndarray:
    """10-year CVD risk (fraction) for arrays of patients (mmHg, mmol/L, 0/1); NaN outside 40-89 y."""
    return score2_core(age, male, sbp, tchol, hdl, smoking, diabetes, region)


def high_risk_threshold(age) -> np.ndarray:
    """ESC 2021 'very high risk' cut-offs by age: 7.5 % (<50), 10 % (50-69), 15 % (>=70)."""
    age = np.asarray(age, dtype=float)
    return np.where(age < 50, 0.075, np.where(age < 70, 0.10, 0.15))
