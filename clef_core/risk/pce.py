"""2013 ACC/AHA Pooled Cohort Equations: 10-year risk of a first hard ASCVD event.

Source: Goff DC Jr, Lloyd-Jones DM, Bennett G, et al. 2013 ACC/AHA guideline on the assessment of
cardiovascular risk. Circulation 2014;129(25 Suppl 2):S49-S73, Appendix 7, Table A ("Equation
parameters of the Pooled Cohort Equations ... and example calculations"):

  risk = 1 - S10 ** exp(sum(coef * value) - mean_sum)

with ln-transformed age, total and HDL cholesterol (mg/dL) and SBP (mmHg; treated or untreated
coefficient by antihypertensive treatment). Hard ASCVD: CHD death, non-fatal MI, fatal or
non-fatal stroke. Defined for ages 40-79.

Race: the guideline fits separate equations for African American and for white people and
advises the white equations for every other group. The project never infers race from data:
``race`` is a setting the user supplies explicitly ([risk] pce_race, or race= in `clef risk`),
"white" by default (the guideline's choice for everyone who is not African American).
"""

from __future__ import annotations

import numpy as np

AGE_RANGE = (40.0, 79.0)
RACES = ("white", "african_american")
OUTCOMES = ("ascvd",)

# (sex, race) -> coefficients of: ln age, ln age^2, ln TC, ln age x ln TC, ln HDL, ln age x ln HDL,
# ln treated SBP, ln age x ln treated SBP, ln untreated SBP, ln age x ln untreated SBP,
# smoker, ln age x smoker, diabetes; then S10 and the mean sum.
_TABLE = {
    ("female", "white"): ((-29.799, 4.884, 13.540, -3.114, -13.578, 3.149, 2.019, 0.0, 1.957, 0.0, 7.574, -1.665, 0.661), 0.9665, -29.18),
    ("female", "african_american"): ((17.114, 0.0, 0.940, 0.0, -18.920, 4.475, 29.291, -6.432, 27.820, -6.087, 0.691, 0.0, 0.874), 0.9533, 86.61),
    ("male", "white"): ((12.344, 0.0, 11.853, -2.664, -7.990, 1.769, 1.797, 0.0, 1.764, 0.0, 7.837, -1.795, 0.658), 0.9144, 61.18),
    ("male", "african_american"): ((2.469, 0.0, 0.302, 0.0, -0.307, 0.0, 1.916, 0.0, 1.809, 0.0, 0.549, 0.0, 0.645), 0.8954, 19.54),
}


def normalize_race(race: str) -> str:
    key = str(race).strip().lower().replace(" ", "_").replace("-", "_")
    key = {"black": "african_american", "aa": "african_american", "other": "white"}.get(key, key)
    if key not in RACES:
        raise ValueError(f"race: PCE has equations for {RACES} (white also serves every other group), got {race!r}")
    return key


def pce_core(age, male, sbp, total_chol_mgdl, hdl_mgdl, bp_treated, smoking, diabetes, race: str = "white") -> np.ndarray:
    """10-year hard ASCVD risk (fraction) for arrays of patients; cholesterol in mg/dL; NaN
    outside ages 40-79. No validation."""
    race = normalize_race(race)
    age, sbp, tc, hdl, treated, smk, dm = (np.asarray(v, dtype=float) for v in (age, sbp, total_chol_mgdl, hdl_mgdl, bp_treated, smoking, diabetes))
    male = np.asarray(male, dtype=bool)
    la, lt, lh, ls = np.log(age), np.log(tc), np.log(hdl), np.log(sbp)
    terms = np.stack([la, la**2, lt, la * lt, lh, la * lh, treated * ls, treated * la * ls,
                      (1 - treated) * ls, (1 - treated) * la * ls, smk, la * smk, dm], axis=-1)
    out = np.full(age.shape, np.nan)
    for sex, is_sex in (("male", male), ("female", ~male)):
        coef, s10, mean = _TABLE[(sex, race)]
        lp = terms @ np.asarray(coef)
        out = np.where(is_sex, 1.0 - s10 ** np.exp(lp - mean), out)
    defined = (age >= AGE_RANGE[0]) & (age <= AGE_RANGE[1])
    return np.where(defined, out, np.nan)
