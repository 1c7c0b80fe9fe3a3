"""Site (hospital) profiles of the synthetic cohort.

Real hospitals differ in their ECG carts (gain calibration, amplifier noise, mains
frequency, electrode practice -> baseline wander), in their patients (age mix,
risk-factor prevalence) and in what their records hold (how often blood pressure,
lipids and admissions are on file). A :class:`SiteProfile` carries those
differences; :func:`make_sites` draws K of them deterministically from a seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SiteProfile:
    """One hospital: devices, patient mix and record-keeping habits."""

    site: int
    name: str
    # devices
    mains_hz: int  # powerline frequency, 50 (Europe) or 60 (Americas)
    gain: float  # true/nominal amplitude ratio of the site's carts (calibration error)
    cart_ids: tuple[int, ...]
    cart_gains: tuple[float, ...]  # per-cart factor on top of ``gain``
    noise_mv: float  # broadband (muscle/amplifier) noise RMS per lead, mV
    wander_mv: float  # baseline-wander amplitude, mV
    powerline_mv: float  # mains interference amplitude, mV
    # patient mix
    age_a: float  # age = 18 + 78 * Beta(age_a, age_b)
    age_b: float
    male_frac: float
    smoking_shift: float  # added to the smoking logit
    sbp_shift: float  # mmHg added to systolic BP
    metab_shift: float  # shift of the metabolic (BMI-like) latent
    # record keeping (missingness)
    p_bp: float  # a BP reading in the window before the ECG
    p_lab: float  # a lipid panel in the window before the ECG
    p_admitted: float  # any hospital admission on file
    p_code_diabetes: float  # a diabetic admission is coded as such
    p_code_smoking: float  # a smoker's admission is coded as such
    p_decoy: float  # extra measurements outside the window / after the ECG

    def as_dict(self) -> dict:
        return asdict(self)


def _spread(rng: np.random.Generator, centre: float, rel: float, lo: float, hi: float) -> float:
    return float(np.clip(centre * np.exp(rng.normal(0.0, rel)), lo, hi))


def make_sites(k: int, seed: int, carts_per_site: tuple[int, int] = (2, 4)) -> list[SiteProfile]:
    """K site profiles drawn from ``seed``; site 0 is a typical academic hospital.

    Mains frequency alternates 60/50 Hz from site 0 so that any multi-site cohort has both.
    Cart ids are unique 4-digit numbers across sites, as MIMIC-IV-ECG's ``cart_id``.
    """
    if k < 1:
        raise ValueError(f"sites must be >= 1, got {k}")
    lo, hi = carts_per_site
    if not 1 <= lo <= hi:
        raise ValueError(f"carts_per_site must be 1 <= min <= max, got {carts_per_site}")
    rng = np.random.default_rng([seed, 0x517E])
    n_carts = rng.integers(lo, hi + 1, size=k)
    all_ids = rng.choice(np.arange(1000, 10000), size=int(n_carts.sum()), replace=False)
    sites = []
    start = 0
    for s in range(k):
        ids = tuple(int(i) for i in sorted(all_ids[start : start + n_carts[s]]))
        start += n_carts[s]
        typical = s == 0
        sites.append(
            SiteProfile(
                site=s,
                name=f"site{s}",
                mains_hz=60 if s % 2 == 0 else 50,
                gain=1.0 if typical else float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1)),
                cart_ids=ids,
                cart_gains=tuple(float(g) for g in np.clip(rng.normal(1.0, 0.015, size=len(ids)), 0.96, 1.04)),
                noise_mv=0.012 if typical else _spread(rng, 0.012, 0.5, 0.004, 0.05),
                wander_mv=0.1 if typical else _spread(rng, 0.1, 0.5, 0.02, 0.4),
                powerline_mv=0.01 if typical else _spread(rng, 0.01, 0.8, 0.0, 0.06),
                age_a=3.0 if typical else float(rng.uniform(2.0, 4.0)),
                age_b=2.0 if typical else float(rng.uniform(1.6, 2.6)),
                male_frac=0.52 if typical else float(rng.uniform(0.44, 0.6)),
                smoking_shift=0.0 if typical else float(rng.normal(0.0, 0.4)),
                sbp_shift=0.0 if typical else float(rng.normal(0.0, 5.0)),
                metab_shift=0.0 if typical else float(rng.normal(0.0, 0.3)),
                p_bp=0.85 if typical else float(rng.uniform(0.6, 0.95)),
                p_lab=0.35 if typical else float(rng.uniform(0.15, 0.5)),
                p_admitted=0.6 if typical else float(rng.uniform(0.35, 0.85)),
                p_code_diabetes=0.85 if typical else float(rng.uniform(0.7, 0.95)),
                p_code_smoking=0.6 if typical else float(rng.uniform(0.35, 0.8)),
                p_decoy=0.4 if typical else float(rng.uniform(0.2, 0.6)),
            )
        )
    return sites
