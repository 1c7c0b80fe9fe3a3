"""Tunable links between the hidden cardiovascular risk, the ECG, the sites and the labels.

The default cohort ties the waveform to risk only weakly (e.g. QTc +40 ms per unit of risk, i.e.
~2-3 ms for a typical patient, below the 15 ms spread). These knobs make an evidence cohort in
which a clinically guided loss *can* help, and controls in which it cannot:

* ``risk_signal`` s >= 0: a waveform signal of the hidden risk factor h (below): the T wave is
  scaled by clip(1 - 0.3 s h, 0.2, 1.8) and QTc moves by 15 s h ms. s = 0 removes the term
  exactly (the cohort is then the default one, bit for bit).
* ``risk_factor_age`` a in [0, 1]: how much of h is age. With L = logit(true SCORE2, age clipped
  to 40-89), L_age its least-squares linear fit on age and L_res = L - L_age (both over the cohort),
  h = standardise(a z(L_age) + sqrt(1 - a^2) z(L_res)); corr(h, age) = a. a = 0 makes the signal
  carry only the non-age part of risk (blood pressure, lipids, smoking, diabetes).
* ``risk_labels``: adds the label ``cvd_event`` ~ Bernoulli(sigmoid(-1.4 + 1.5 h)) per patient
  (every ECG of the patient), a follow-up outcome that depends on h (prevalence ~0.27).
* ``site_nuisance`` g >= 0: each site's carts add a site signature to every measured lead, a
  sinusoid of 0.05 g mV at the site's own frequency (7 + 5.5 site Hz, folded into 5-35 Hz) with a
  random phase per record: a shortcut an encoder can learn that says nothing about the patient.
* ``site_risk_link`` l: site s's patients get SBP + 20 l c_s mmHg and metabolic latent + 1.0 l c_s,
  c_s evenly spaced in [-1, 1] over the sites, so site predicts risk.
* ``site_missing_link`` m: site s's chance of BP and lipids on file moves by + 0.3 m c_s (clipped to
  [0.02, 0.98]): with l and m of the same sign the riskier sites also record more.
* ``risk_coverage`` c in [0, 1] (negative: off, the sites' own record keeping): each patient has
  every SCORE2 input on file at the index ECG with probability c (BP and lipids in the window, a
  stay during the ECG, so diabetes and smoking codes are read); otherwise the lipids are missing.
  Risk stays undefined outside SCORE2's 40-89 years whatever c is.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from clef_core.config import require
RISK_LABELS = {
    "cvd_event": "a cardiovascular event in follow-up, drawn from the hidden risk factor (synth.risk_labels)",
}
T_SCALE_PER_SD = 0.3
QTC_MS_PER_SD = 15.0
NUISANCE_MV = 0.05


@dataclasses.dataclass(frozen=True)
class RiskLink:
    """The knobs of the module docstring; the defaults leave the default cohort unchanged."""

    risk_signal: float = 0.0
    risk_factor_age: float = 0.5
    risk_labels: bool = False
    site_nuisance: float = 0.0
    site_risk_link: float = 0.0
    site_missing_link: float = 0.0
    risk_coverage: float = -1.0

    def __post_init__(self) -> None:
        require(self.risk_signal >= 0, "synth.risk_signal", self.risk_signal, ">= 0")
        require(self.site_nuisance >= 0, "synth.site_nuisance", self.site_nuisance, ">= 0")
        require(0 <= self.risk_factor_age <= 1, "synth.risk_factor_age", self.risk_factor_age, "in [0, 1]")
        require(self.risk_coverage <= 1, "synth.risk_coverage", self.risk_coverage, "in [0, 1] (negative: off)")
        for name in ("site_risk_link", "site_missing_link"):
            require(-1 <= getattr(self, name) <= 1, f"synth.{name}", getattr(self, name), "in [-1, 1]")

    @property
    def factor_needed(self) -> bool:
        """True when the hidden factor h is used (a waveform term or a label)."""
        return self.risk_signal > 0 or self.risk_labels

    def link(self) -> RiskLink:
        """The knobs alone (for a :class:`~clef_core.synth.cohort.SynthConfig`, its link part)."""
        return RiskLink(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RiskLink)})

    @property
    def is_default(self) -> bool:
        return self.link() == RiskLink()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self.link())


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def hidden_factor(age: np.ndarray, risk: np.ndarray, age_weight: float) -> np.ndarray:
    """h of the module docstring from ages and the (age-clipped, never NaN) true risks."""
    logit = np.log(risk / (1 - risk))
    age = np.asarray(age, float)
    design = np.c_[np.ones_like(age), age]
    coef, *_ = np.linalg.lstsq(design, logit, rcond=None)
    fitted = design @ coef
    return _z(age_weight * _z(fitted) + np.sqrt(1 - age_weight**2) * _z(logit - fitted))


def apply_to_subjects(df: pd.DataFrame, link: RiskLink, seed: int) -> None:
    """Add ``risk_factor``, ``t_scale``, the QTc shift and ``cvd_event`` to the subjects table."""
    if not link.factor_needed:
        return
    h = hidden_factor(df["age"].clip(40, 89).to_numpy(float), df["risk_latent"].to_numpy(float), link.risk_factor_age)
    df["risk_factor"] = np.round(h, 4)
    s = link.risk_signal
    df["t_scale"] = np.round(np.clip(1 - T_SCALE_PER_SD * s * h, 0.2, 1.8), 4)
    df["qtc_ms"] = np.round(df["qtc_ms"].to_numpy(float) + QTC_MS_PER_SD * s * h)
    if link.risk_labels:
        rng = np.random.default_rng([seed, 0x215C])
        df["cvd_event"] = (rng.random(len(df)) < event_probability(h)).astype(int)


def event_probability(h: np.ndarray) -> np.ndarray:
    """P(cvd_event = 1 | h) = sigmoid(-1.4 + 1.5 h), the label's true probability (its Bayes score)."""
    return 1 / (1 + np.exp(1.4 - 1.5 * np.asarray(h, float)))


def complete_flags(n: int, link: RiskLink, seed: int) -> np.ndarray | None:
    """Per subject (in subject order): all SCORE2 inputs on file at the index ECG, or None (off)."""
    if link.risk_coverage < 0:
        return None
    return np.random.default_rng([seed, 0xC0FE]).random(n) < link.risk_coverage


def site_centres(k: int) -> np.ndarray:
    """c_s: evenly spaced in [-1, 1] over k sites (0 for a single site)."""
    return np.linspace(-1.0, 1.0, k) if k > 1 else np.zeros(1)


def nuisance_hz(site: np.ndarray) -> np.ndarray:
    """The frequency of each site's signature, Hz (distinct for up to 6 sites)."""
    return 5.0 + np.mod(2.0 + 5.5 * np.asarray(site, float), 30.0)


def link_sites(sites: list, link: RiskLink) -> list:
    """The site profiles with ``site_risk_link`` / ``site_missing_link`` applied (unchanged when 0)."""
    if link.site_risk_link == 0 and link.site_missing_link == 0:
        return sites
    c = site_centres(len(sites))
    out = []
    for prof, cs in zip(sites, c):
        l, m = link.site_risk_link * cs, link.site_missing_link * cs
        out.append(dataclasses.replace(
            prof,
            sbp_shift=prof.sbp_shift + 20.0 * l,
            metab_shift=prof.metab_shift + 1.0 * l,
            p_bp=float(np.clip(prof.p_bp + 0.3 * m, 0.02, 0.98)),
            p_lab=float(np.clip(prof.p_lab + 0.3 * m, 0.02, 0.98)),
        ))
    return out
