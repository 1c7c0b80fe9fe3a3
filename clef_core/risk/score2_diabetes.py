"""SCORE2-Diabetes: 10-year risk of fatal and non-fatal CVD in type 2 diabetes (ESC 2023).

Source: SCORE2-Diabetes Working Group and the ESC Cardiovascular Risk Collaboration.
SCORE2-Diabetes: 10-year cardiovascular risk estimation in type 2 diabetes in Europe. Eur Heart J
2023;44:2544-2556 (Supplementary Methods: model coefficients; region recalibration as SCORE2).

  cage = (age-60)/5, csbp = (sbp-120)/20, ctc = tc-6, chdl = (hdl-1.3)/0.5,
  cagediab = diabetes * (age at diabetes diagnosis - 50)/5,
  ca1c = (HbA1c [mmol/mol] - 31)/9.34, cegfr = (ln eGFR - 4.5)/0.15
  LP = b . (cage, smoking, csbp, diabetes, ctc, chdl, smoking*cage, csbp*cage, diabetes*cage,
            ctc*cage, chdl*cage, cagediab, ca1c, cegfr, cegfr^2, ca1c*cage, cegfr*cage)
  p0 = 1 - S0 ** exp(LP);  risk = 1 - exp(-exp(scale1 + scale2 * ln(-ln(1 - p0))))

S0 and the region scales are SCORE2's (clef_core.score2). Defined for ages 40-69. HbA1c enters in
IFCC units: mmol/mol = 10.929 * (% NGSP - 2.15) (IFCC-NGSP master equation); the project's tables
hold % (as MIMIC-IV reports it) and convert here.
"""

from __future__ import annotations

import numpy as np

from clef_core.score2 import _RECALIBRATION, _SCORE2, normalize_region

AGE_RANGE = (40.0, 69.0)
OUTCOMES = ("cvd",)

_COEF = {  # sex -> coefficients in the LP order of the module doc
    "male": (0.5368, 0.4774, 0.1322, 0.6457, 0.1102, -0.1087, -0.0672, -0.0268, -0.0983, -0.0181, 0.0095,
             -0.0998, 0.0955, -0.0591, 0.0058, -0.0134, 0.0115),
    "female": (0.6624, 0.6139, 0.1421, 0.8096, 0.1127, -0.1568, -0.1122, -0.0167, -0.1272, -0.0200, 0.0186,
               -0.1180, 0.1173, -0.0640, 0.0062, -0.0196, 0.0169),
}


def hba1c_percent_to_mmol_mol(percent):
    """NGSP % -> IFCC mmol/mol (IFCC-NGSP master equation)."""
    return 10.929 * (np.asarray(percent, dtype=float) - 2.15)


def score2_diabetes_core(age, male, sbp, total_chol, hdl, smoking, diabetes, diabetes_age, hba1c_percent, egfr, region: str = "low") -> np.ndarray:
    """Risk fraction for arrays of patients (mmHg, mmol/L, HbA1c %, eGFR mL/min/1.73 m2;
    ``diabetes_age`` is ignored where diabetes is 0); NaN outside ages 40-69. No validation."""
    region = normalize_region(region)
    age, sbp, tc, h, smk, dm, dage, a1c, egfr = (np.asarray(v, dtype=float) for v in (age, sbp, total_chol, hdl, smoking, diabetes, diabetes_age, hba1c_percent, egfr))
    male = np.asarray(male, dtype=bool)
    cage, csbp, ctc, chdl = (age - 60) / 5, (sbp - 120) / 20, tc - 6, (h - 1.3) / 0.5
    cagediab = np.where(dm > 0, dm * (np.nan_to_num(dage, nan=50.0) - 50) / 5, 0.0)
    ca1c = (hba1c_percent_to_mmol_mol(a1c) - 31) / 9.34
    cegfr = (np.log(egfr) - 4.5) / 0.15
    terms = np.stack([cage, smk, csbp, dm, ctc, chdl, smk * cage, csbp * cage, dm * cage, ctc * cage, chdl * cage,
                      cagediab, ca1c, cegfr, cegfr**2, ca1c * cage, cegfr * cage], axis=-1)
    out = np.full(age.shape, np.nan)
    for sex, is_sex in (("male", male), ("female", ~male)):
        s0 = _SCORE2[sex][1]
        p0 = 1.0 - s0 ** np.exp(terms @ np.asarray(_COEF[sex]))
        scale1, scale2 = _RECALIBRATION["SCORE2"][region][sex]
        out = np.where(is_sex, 1.0 - np.exp(-np.exp(scale1 + scale2 * np.log(-np.log(1.0 - p0)))), out)
    defined = (age >= AGE_RANGE[0]) & (age <= AGE_RANGE[1])
    return np.where(defined, out, np.nan)
