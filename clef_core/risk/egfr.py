"""eGFR from serum creatinine: CKD-EPI 2021, without a race coefficient.

Source: Inker LA, Eneanya ND, Coresh J, et al. New creatinine- and cystatin C-based equations to
estimate GFR without race. N Engl J Med 2021;385:1737-49:

  eGFR = 142 * min(Scr/k, 1)**a * max(Scr/k, 1)**-1.200 * 0.9938**age * (1.012 if female)
  k = 0.7 (female) / 0.9 (male), a = -0.241 (female) / -0.302 (male); Scr mg/dL (umol/L / 88.4).
"""

from __future__ import annotations

import numpy as np

UMOL_L_PER_MG_DL = 88.4


def ckd_epi_2021(creatinine_mg_dl, age, male) -> np.ndarray:
    """eGFR in mL/min/1.73 m2 for arrays of patients (NaN where any input is NaN)."""
    scr, age = np.asarray(creatinine_mg_dl, dtype=float), np.asarray(age, dtype=float)
    male = np.asarray(male, dtype=bool)
    kappa = np.where(male, 0.9, 0.7)
    alpha = np.where(male, -0.302, -0.241)
    ratio = scr / kappa
    return 142.0 * np.minimum(ratio, 1.0) ** alpha * np.maximum(ratio, 1.0) ** -1.200 * 0.9938**age * np.where(male, 1.0, 1.012)


def creatinine_for_egfr(egfr, age, male) -> np.ndarray:
    """Inverse of :func:`ckd_epi_2021` (the synthetic cohort draws eGFR and writes creatinine)."""
    egfr, age = np.asarray(egfr, dtype=float), np.asarray(age, dtype=float)
    male = np.asarray(male, dtype=bool)
    kappa = np.where(male, 0.9, 0.7)
    alpha = np.where(male, -0.302, -0.241)
    base = egfr / (142.0 * 0.9938**age * np.where(male, 1.0, 1.012))  # = min(r,1)^a * max(r,1)^-1.2
    ratio = np.where(base >= 1.0, base ** (1.0 / alpha), base ** (1.0 / -1.200))
    return ratio * kappa
