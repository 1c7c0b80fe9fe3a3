"""The fixed reference population of the ``impute_reference`` missing-metadata policy.

A patient's missing SCORE2 inputs (sbp, total_chol, hdl, smoking, diabetes) are filled with the
mean (continuous inputs) or the prevalence (smoking, diabetes: the expected value of a 0/1
input; SCORE2's linear predictor is linear in it) of their age band and sex in a fixed,
published general population, never with statistics of the site's own patients: those would
leak other patients' data into one patient's training weight, outside any privacy accounting.

Population: United States adults, NHANES 2015-2018 (examination: SBP, total and HDL
cholesterol; total = diagnosed + undiagnosed diabetes) and NHIS 2018 (current cigarette
smoking), National Center for Health Statistics (NCHS), CDC.

PROVENANCE WARNING (``VERIFIED = False``): the numbers below are rounded approximations of the
NCHS estimates, entered without access to the primary tables in the session that wrote this
module; they are not copied from one specific published table. Check them against the NCHS
publications (NHANES 2015-2018 summary tables of mean SBP and mean serum total / HDL
cholesterol by sex and age; CDC National Diabetes Statistics Report 2020, Table 1a/1b; Creamer
MR et al., MMWR 2019;68:1013-9, current cigarette smoking by sex and age) before reporting results
that depend on ``impute_reference``, then set ``VERIFIED = True``. The table identifier
:data:`REFERENCE_ID` is recorded in every output that used it, so results remain traceable.
"""

from __future__ import annotations

import numpy as np

REFERENCE_ID = "us-nhanes2015-2018-nhis2018-approx-v1"
VERIFIED = False
SOURCE = (
    "NCHS/CDC: NHANES 2015-2018 (mean SBP, total and HDL cholesterol, total diabetes prevalence) and "
    "NHIS 2018 (current cigarette smoking); rounded approximations, VERIFIED=False (see module doc)"
)

BAND_LOW = np.array([40, 50, 60, 70, 80])  # age bands 40-49, 50-59, 60-69, 70-79, 80-89
FIELDS = ("sbp", "total_chol", "hdl", "smoking", "diabetes")  # mmHg, mmol/L, mmol/L, fraction, fraction

# sex -> one row per age band: (sbp, total_chol, hdl, smoking prevalence, diabetes prevalence)
TABLE = {
    "male": np.array(
        [
            [124.0, 5.20, 1.22, 0.20, 0.10],
            [128.0, 5.10, 1.25, 0.19, 0.19],
            [131.0, 4.80, 1.27, 0.15, 0.27],
            [133.0, 4.50, 1.30, 0.08, 0.30],
            [136.0, 4.40, 1.33, 0.04, 0.27],
        ]
    ),
    "female": np.array(
        [
            [118.0, 5.10, 1.50, 0.16, 0.08],
            [126.0, 5.50, 1.55, 0.16, 0.15],
            [131.0, 5.40, 1.57, 0.12, 0.22],
            [137.0, 5.20, 1.57, 0.07, 0.25],
            [141.0, 5.10, 1.55, 0.03, 0.22],
        ]
    ),
}


def band_index(age: np.ndarray) -> np.ndarray:
    """Row of :data:`TABLE` for each age (ages outside 40-89 map to the nearest band)."""
    age = np.asarray(age, dtype=float)
    return np.clip(np.searchsorted(BAND_LOW, age, side="right") - 1, 0, len(BAND_LOW) - 1)


def reference_values(age: np.ndarray, male: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised lookup: field -> array of the reference mean / prevalence per patient."""
    rows = band_index(age)
    male = np.asarray(male, dtype=bool)
    values = np.where(male[:, None], TABLE["male"][rows], TABLE["female"][rows])
    return {name: values[:, i] for i, name in enumerate(FIELDS)}
