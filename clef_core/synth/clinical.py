"""Synthetic patients: correlated clinical state, ECG phenotype and ECG schedule.

Everything here is hidden truth; :mod:`clef_core.synth.tables` decides what of it
reaches the hosp tables. The effect sizes are plausible round numbers chosen so the
marginals look like a hospital ECG cohort (median age ~65, SBP ~130 mmHg, TC ~5 mmol/L,
HDL ~1.3 mmol/L, ~20 % smokers, ~15 % diabetics), not fitted to any data set.

Latent structure:
  metab ~ N(site shift, 1)  a BMI-like metabolic latent
  smoking   ~ logit -0.9 - 0.04 (age-40) + 0.35 male          (declines with age)
  diabetes  ~ logit -3.0 + 0.04 (age-40) + 0.9 metab + 0.2 male
  SBP       = 112 + 0.5 (age-40) + 5 male + 5 metab + 4 diabetes + N(0, 14)
  TC        = 4.9 + 0.012 (age-40) - 0.25 diabetes (statins) + 0.15 metab + 0.2 female>55 + N(0, 0.95)
  HDL       = 1.5 exp(-0.22 male - 0.08 metab - 0.08 smoking - 0.05 diabetes + N(0, 0.22))
PREVENT / PCE / SCORE2-Diabetes inputs (a separate random stream, so the draws above and every
table that existed before them are unchanged):
  eGFR      = 112 - 0.85 (age-30) - 6 diabetes - 0.1 (SBP-130) + N(0, 12), in 8-140; the tables
              hold the serum creatinine that gives it under CKD-EPI 2021 (0.01 mg/dL steps)
  bp_treated ~ logit -1.2 + 0.05 (SBP-130) + 0.04 (age-50) + 0.6 diabetes + 0.3 metab
  statin     ~ logit -2.0 + 0.05 (age-50) + 1.3 diabetes + 0.6 (TC > 6.2)
  HbA1c %   = diabetes: 7.3 + 0.3 metab + N(0, 1.1) in 5.7-13; else 5.35 + 0.1 metab + N(0, 0.3) in 4.2-6.4
  UACR mg/g = exp(2.2 + 0.9 diabetes + 0.015 (SBP-130) + N(0, 1.0)), in 1-3000
  age at diabetes diagnosis = age - U(0, min(25, age-25)) for diabetics
ECG phenotype (drives the waveform model):
  LV mass index = 80 + 0.55 (SBP-120) + 12 male + 0.25 (age-50) + 4 metab + N(0, 14);
  LVH = LVMI > 118 g/m^2, strain grows from LVMI 132; AF logit -4.9 + 0.075 (age-40) + ... rises with age;
  conduction block and ischaemic ST depression rise with the (age-clipped) SCORE2 risk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clef_core.risk.egfr import ckd_epi_2021, creatinine_for_egfr
from clef_core.risk.prevent import prevent_core
from clef_core.synth.risk import high_risk_threshold, score2_risk
from clef_core.synth.risk_link import RiskLink, apply_to_subjects, link_sites
from clef_core.synth.hospital_profiles import SiteProfile

# MIMIC-IV shifts every patient's dates into 2100-2200 and reports the real era as a group.
ANCHOR_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
NO_CONDUCTION, RBBB, LBBB = 0, 1, 2
NO_AF, PAROXYSMAL_AF, PERSISTENT_AF = 0, 1, 2


@dataclass
class ClinicalCohort:
    """Hidden truth of a synthetic cohort, before any signal or table is made."""

    sites: list[SiteProfile]
    subjects: pd.DataFrame  # one row per subject (truth + phenotype)
    records: pd.DataFrame  # one row per ECG: subject_id, study_id, site, cart_id, ecg_time, age, af, ...
    region: str
    seed: int
    link: RiskLink = field(default_factory=RiskLink)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _assign_sites(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Unequal site sizes (each >= half its fair share); every site gets a patient when n >= k."""
    shares = 0.5 / k + 0.5 * rng.dirichlet(np.full(k, 4.0))
    site = rng.choice(k, size=n, p=shares / shares.sum())
    site[: min(n, k)] = np.arange(min(n, k))
    return site


def _unique_ids(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """n distinct integers in [lo, hi), in random order."""
    return lo + rng.choice(hi - lo, size=n, replace=False).astype(np.int64)


def _draw_subjects(rng: np.random.Generator, n: int, sites: list[SiteProfile], region: str) -> pd.DataFrame:
    k = len(sites)
    prof = {f: np.array([getattr(s, f) for s in sites]) for f in SiteProfile.__dataclass_fields__ if f not in ("name", "cart_ids", "cart_gains")}
    site = _assign_sites(rng, n, k)
    p = {f: v[site] for f, v in prof.items()}
    age = 18 + np.floor(78 * rng.beta(p["age_a"], p["age_b"])).astype(int)  # true age in the anchor year
    male = rng.random(n) < p["male_frac"]
    metab = rng.normal(p["metab_shift"], 1.0)
    smoking = rng.random(n) < _sigmoid(-0.9 - 0.04 * (age - 40) + 0.35 * male + p["smoking_shift"])
    diabetes = rng.random(n) < _sigmoid(-3.0 + 0.04 * (age - 40) + 0.9 * metab + 0.2 * male)
    sbp = np.round(np.clip(112 + 0.5 * (age - 40) + 5 * male + 5 * metab + 4 * diabetes + p["sbp_shift"] + rng.normal(0, 14, n), 85, 220))
    tc = 4.9 + 0.012 * (age - 40) - 0.25 * diabetes + 0.15 * metab + 0.2 * (~male & (age > 55)) + rng.normal(0, 0.95, n)
    hdl = 1.5 * np.exp(-0.22 * male - 0.08 * metab - 0.08 * smoking - 0.05 * diabetes + rng.normal(0, 0.22, n))
    # Lab values live in mg/dL (integers, as MIMIC reports them); the truth is their exact mmol/L.
    tc_mgdl = np.round(np.clip(tc, 2.3, 10.0) * 38.67).astype(int)
    hdl_mgdl = np.round(np.clip(hdl, 0.5, 3.2) * 38.67).astype(int)
    bmi = np.round(np.clip(27 + 4 * metab + rng.normal(0, 1.5, n), 16, 55), 1)

    anchor_year = rng.integers(2110, 2191, size=n)
    group = rng.integers(0, len(ANCHOR_YEAR_GROUPS), size=n)
    real_anchor_year = 2008 + 3 * group + rng.integers(0, 3, size=n)
    # first ECG in the anchor year or up to 3 years later: integer age at it
    first_offset_days = rng.uniform(0, 3 * 365.25, size=n)
    first_ecg = (anchor_year - 1970).astype("datetime64[Y]").astype("datetime64[s]") + (first_offset_days * 86400).astype("timedelta64[s]")
    index_age = age + (first_ecg.astype("datetime64[Y]").astype(int) + 1970 - anchor_year)

    df = pd.DataFrame(
        {
            "site": site,
            "sex": np.where(male, "male", "female"),
            "anchor_age_true": age,
            "anchor_year": anchor_year,
            "anchor_year_group": np.array(ANCHOR_YEAR_GROUPS)[group],
            "real_anchor_year": real_anchor_year,
            "index_ecg_time": first_ecg,
            "age": index_age,
            "sbp": sbp.astype(int),
            "total_chol": tc_mgdl / 38.67,
            "hdl": hdl_mgdl / 38.67,
            "total_chol_mgdl": tc_mgdl,
            "hdl_mgdl": hdl_mgdl,
            "smoking": smoking.astype(int),
            "diabetes": diabetes.astype(int),
            "bmi": bmi,
            "metab": metab,
        }
    )
    args = (df["sbp"], df["total_chol"], df["hdl"], df["smoking"], df["diabetes"])
    df["score2"] = score2_risk(index_age, male, *args, region=region)
    # Phenotype drivers need a risk for everyone: clip age into SCORE2's domain.
    risk = score2_risk(np.clip(index_age, 40, 89), male, *args, region=region)
    df["risk_latent"] = risk
    _add_phenotype(rng, df, male, metab, risk)
    # Record-keeping twists used by the hosp tables: diabetes diagnosed only after the ECG,
    # former smokers (old codes only).
    df["later_diabetes"] = (~diabetes & (rng.random(n) < 0.05)).astype(int)
    df["former_smoker"] = (~smoking & (rng.random(n) < 0.25)).astype(int)
    return df


def _sigmoid_draw(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return (rng.random(len(logit)) < _sigmoid(logit)).astype(int)


def _add_cardiometabolic(df: pd.DataFrame, seed: int) -> None:
    """Truth of the PREVENT / PCE / SCORE2-Diabetes inputs (module doc), from its own stream,
    and ``prevent``: the true PREVENT base 10-year total-CVD risk at the index ECG (NaN outside 30-79)."""
    rng = np.random.default_rng([seed, 0xCAD])
    n = len(df)
    age, sbp, metab = df["age"].to_numpy(float), df["sbp"].to_numpy(float), df["metab"].to_numpy(float)
    dm, male = df["diabetes"].to_numpy(float), (df["sex"] == "male").to_numpy()
    egfr = np.clip(112 - 0.85 * (age - 30) - 6 * dm - 0.1 * (sbp - 130) + rng.normal(0, 12, n), 8, 140)
    creat = np.round(creatinine_for_egfr(egfr, age, male), 2)
    df["creatinine"] = creat
    df["egfr"] = np.round(ckd_epi_2021(creat, age, male), 3)  # what an extractor computes from the written creatinine
    df["bp_treated"] = _sigmoid_draw(rng, -1.2 + 0.05 * (sbp - 130) + 0.04 * (age - 50) + 0.6 * dm + 0.3 * metab)
    df["statin"] = _sigmoid_draw(rng, -2.0 + 0.05 * (age - 50) + 1.3 * dm + 0.6 * (df["total_chol"].to_numpy(float) > 6.2))
    a1c_dm = np.clip(7.3 + 0.3 * metab + rng.normal(0, 1.1, n), 5.7, 13.0)
    a1c_no = np.clip(5.35 + 0.1 * metab + rng.normal(0, 0.3, n), 4.2, 6.4)
    df["hba1c"] = np.round(np.where(dm > 0, a1c_dm, a1c_no), 1)
    df["uacr"] = np.round(np.clip(np.exp(2.2 + 0.9 * dm + 0.015 * (sbp - 130) + rng.normal(0, 1.0, n)), 1, 3000), 1)
    onset = np.floor(age - rng.uniform(0, 1, n) * np.clip(np.minimum(25, age - 25), 0, None))
    df["diabetes_age"] = np.where(dm > 0, onset, np.nan)
    x = {k: df[k].to_numpy(float) for k in ("age", "sbp", "total_chol", "hdl", "smoking", "diabetes", "bmi", "egfr", "bp_treated", "statin")}
    df["prevent"] = prevent_core(x, male, 10, "base")["total_cvd"]


def _add_phenotype(rng: np.random.Generator, df: pd.DataFrame, male: np.ndarray, metab: np.ndarray, risk: np.ndarray) -> None:
    n = len(df)
    age = df["age"].to_numpy(float)
    sbp = df["sbp"].to_numpy(float)
    smoking, diabetes = df["smoking"].to_numpy(), df["diabetes"].to_numpy()
    lvmi = 80 + 0.55 * (sbp - 120) + 12 * male + 0.25 * (age - 50) + 4 * metab + rng.normal(0, 14, n)
    df["lvmi"] = np.round(lvmi, 1)
    df["lvh"] = (lvmi > 118).astype(int)
    df["lvh_strain"] = np.clip((lvmi - 132) / 25, 0, 1).round(3)
    af = rng.random(n) < _sigmoid(-4.9 + 0.075 * (age - 40) + 0.012 * (sbp - 130) + 0.3 * male + 0.3 * metab)
    df["af_type"] = np.where(af, np.where(rng.random(n) < 0.5, PERSISTENT_AF, PAROXYSMAL_AF), NO_AF)
    block = rng.random(n) < _sigmoid(-4.2 + 0.035 * (age - 50) + 6 * risk + 0.4 * male)
    df["conduction"] = np.where(block, np.where(rng.random(n) < 0.55, RBBB, LBBB), NO_CONDUCTION)
    ischemia = rng.random(n) < _sigmoid(-3.8 + 14 * risk + 0.4 * diabetes)
    df["ischemia"] = ischemia.astype(int)
    df["st_depression_mv"] = np.round(ischemia * rng.uniform(0.06, 0.16, n) + 0.15 * risk, 4)
    df["hr"] = np.round(np.clip(73 - 0.1 * (age - 50) + 3 * smoking + 3 * diabetes + 2 * metab + rng.normal(0, 10, n), 45, 125), 1)
    df["hrv"] = np.round((0.055 * np.exp(-(age - 25) / 35) + 0.006) * np.exp(rng.normal(0, 0.3, n)), 4)
    df["pr_ms"] = np.round(np.clip(155 + 0.6 * (age - 50) + rng.normal(0, 18, n), 110, 280))
    qrs = np.clip(88 + 0.12 * (age - 50) + 5 * male + 0.15 * (lvmi - 100) + rng.normal(0, 7, n), 70, 118)
    df["qrs_ms"] = np.round(np.where(block, rng.uniform(125, 165, n), qrs))
    df["qtc_ms"] = np.round(405 + 0.4 * (age - 50) + 12 * ~male + 25 * block + 40 * risk + rng.normal(0, 15, n))
    df["axis_deg"] = np.round(50 - 0.4 * (age - 50) - 10 * df["lvh"].to_numpy() + rng.normal(0, 20, n), 1)
    df["amp_scale"] = np.round(np.clip(np.exp(rng.normal(0, 0.15, n)) * (1 - 0.012 * (df["bmi"].to_numpy() - 27)), 0.5, 1.6), 3)


def _schedule_records(
    rng: np.random.Generator, subjects: pd.DataFrame, sites: list[SiteProfile], records_per_patient: tuple[int, int], region: str
) -> pd.DataFrame:
    lo, hi = records_per_patient
    counts = np.arange(lo, hi + 1)
    prob = 0.5 ** (counts - lo)
    n_rec = rng.choice(counts, size=len(subjects), p=prob / prob.sum())
    sub = subjects.loc[np.repeat(subjects.index.to_numpy(), n_rec)].reset_index(drop=True)
    first = np.r_[True, sub["subject_id"].to_numpy()[1:] != sub["subject_id"].to_numpy()[:-1]]
    # Follow-up ECGs within two years of the first (hours apart when within one stay).
    later_s = np.where(rng.random(len(sub)) < 0.3, rng.uniform(600, 3 * 86400, len(sub)), rng.uniform(86400, 730 * 86400, len(sub)))
    offset = np.where(first, 0, later_s).astype("timedelta64[s]")
    ecg_time = sub["index_ecg_time"].to_numpy().astype("datetime64[s]") + offset
    sub["ecg_time"] = ecg_time
    sub = sub.sort_values(["subject_id", "ecg_time"], kind="stable").reset_index(drop=True)
    ecg_time = sub["ecg_time"].to_numpy().astype("datetime64[s]")
    year = ecg_time.astype("datetime64[Y]").astype(int) + 1970
    age = sub["anchor_age_true"].to_numpy() + year - sub["anchor_year"].to_numpy()
    carts = [np.array(s.cart_ids) for s in sites]
    cart_pick = rng.integers(0, 1 << 30, size=len(sub))
    cart_id = np.array([carts[s][c % len(carts[s])] for s, c in zip(sub["site"].to_numpy(), cart_pick)], dtype=int)
    af_type = sub["af_type"].to_numpy()
    af = (af_type == PERSISTENT_AF) | ((af_type == PAROXYSMAL_AF) & (rng.random(len(sub)) < 0.4))
    male = sub["sex"].to_numpy() == "male"
    risk = score2_risk(age, male, sub["sbp"], sub["total_chol"], sub["hdl"], sub["smoking"], sub["diabetes"], region=region)
    high = np.where(np.isnan(risk), np.nan, (risk >= high_risk_threshold(age)).astype(float))
    out = pd.DataFrame(
        {
            "subject_id": sub["subject_id"].to_numpy(),
            "study_id": _unique_ids(rng, len(sub), 40_000_000, 50_000_000),
            "site": sub["site"].to_numpy(),
            "cart_id": cart_id,
            "ecg_time": ecg_time,
            "age": age,
            "score2": risk,
            "af": af.astype(int),
            "lvh": sub["lvh"].to_numpy(),
            "high_risk": high,
            "conduction": (sub["conduction"].to_numpy() > 0).astype(int),
            "st_dep": sub["ischemia"].to_numpy(),
        }
    )
    if "cvd_event" in sub:
        out["cvd_event"] = sub["cvd_event"].to_numpy()
    return out


def draw_clinical(
    patients: int,
    sites: list[SiteProfile],
    seed: int,
    *,
    records_per_patient: tuple[int, int] = (1, 3),
    region: str = "low",
    link: RiskLink | None = None,
) -> ClinicalCohort:
    """Draw subjects (truth + phenotype) and their ECG schedule; no signals, no files.
    ``link`` sets the risk/site knobs of :mod:`clef_core.synth.risk_link` (None: all off)."""
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    lo, hi = records_per_patient
    if not 1 <= lo <= hi:
        raise ValueError(f"records_per_patient must be 1 <= min <= max, got {records_per_patient}")
    link = link or RiskLink()
    sites = link_sites(sites, link)
    rng = np.random.default_rng([seed, 0xC11])
    subjects = _draw_subjects(rng, patients, sites, region)
    apply_to_subjects(subjects, link, seed)
    _add_cardiometabolic(subjects, seed)
    subjects.insert(0, "subject_id", _unique_ids(rng, patients, 10_000_000, 20_000_000))
    subjects = subjects.sort_values("subject_id").reset_index(drop=True)
    records = _schedule_records(rng, subjects, sites, (lo, hi), region)
    first = records.groupby("subject_id", sort=False).first()
    subjects["index_study_id"] = first.loc[subjects["subject_id"], "study_id"].to_numpy()
    subjects["index_ecg_time"] = first.loc[subjects["subject_id"], "ecg_time"].to_numpy()
    return ClinicalCohort(sites=sites, subjects=subjects, records=records, region=region, seed=seed, link=link)
