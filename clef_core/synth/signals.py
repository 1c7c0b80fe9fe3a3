"""From a record's hidden state to its 12-lead signal in mV.

Every record draws its randomness from its own generator, keyed by (seed, study_id), so a
record's signal does not depend on the batch it is rendered in: rendering a subset of a
cohort reproduces exactly what :func:`clef_core.synth.generate_cohort` wrote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clef_core.synth import artifacts, beats
from clef_core.synth.beats import MAX_BEATS, N_SAMPLES, BeatParams
from clef_core.synth.clinical import ClinicalCohort
from clef_core.synth.risk_link import NUISANCE_MV

N_MEASURED = len(beats.MEASURED)
_N_UNIFORM = 16


def beat_params(frame: pd.DataFrame) -> BeatParams:
    """Waveform parameters from records joined with their subjects' phenotype.

    LV voltage: r_scale = 1 + 0.012 (LVMI - 95), so R in V5/V6 and S in V1/V2 grow with
    LV mass (itself driven by SBP); AF raises the ventricular rate by ~15 %.
    """
    af = frame["af"].to_numpy(bool)
    hr = frame["hr"].to_numpy(float)
    return BeatParams(
        hr=np.where(af, np.minimum(hr * 1.15, 150.0), hr),
        hrv=frame["hrv"].to_numpy(float),
        af=af,
        pr=frame["pr_ms"].to_numpy(float) / 1000,
        qrs=frame["qrs_ms"].to_numpy(float) / 1000,
        qtc=frame["qtc_ms"].to_numpy(float) / 1000,
        axis_deg=frame["axis_deg"].to_numpy(float),
        amp=frame["amp_scale"].to_numpy(float),
        r_scale=np.clip(1 + 0.012 * (frame["lvmi"].to_numpy(float) - 95), 0.6, 2.2),
        strain=frame["lvh_strain"].to_numpy(float),
        st_mv=frame["st_depression_mv"].to_numpy(float),
        conduction=frame["conduction"].to_numpy(int),
        t_scale=frame["t_scale"].to_numpy(float) if "t_scale" in frame else None,
    )


def record_frame(cohort: ClinicalCohort, rows: np.ndarray | slice | None = None) -> pd.DataFrame:
    """Records (optionally a subset, by position) joined with subject phenotype and site devices."""
    rec = cohort.records if rows is None else cohort.records.iloc[rows]
    subj = cohort.subjects.drop(columns=["site", "age"]).set_index("subject_id")
    frame = rec.join(subj.drop(columns=[c for c in subj.columns if c in rec.columns]), on="subject_id")
    # record-level labels (af may differ from the subject's af_type when paroxysmal)
    frame["conduction"] = subj.loc[rec["subject_id"], "conduction"].to_numpy()
    sites = cohort.sites
    cart_gain = {c: g for s in sites for c, g in zip(s.cart_ids, s.cart_gains)}
    site = frame["site"].to_numpy()
    frame["gain"] = np.array([sites[s].gain for s in site]) * frame["cart_id"].map(cart_gain).to_numpy()
    for field in ("noise_mv", "wander_mv", "powerline_mv", "mains_hz"):
        frame[field] = np.array([getattr(sites[s], field) for s in site])
    if cohort.link.site_nuisance > 0:
        frame["nuisance_mv"] = cohort.link.site_nuisance * NUISANCE_MV
    return frame


def render_frame(frame: pd.DataFrame, seed: int, *, clean: bool = False) -> np.ndarray:
    """(B, 12, 5000) float32 signals in mV, MIMIC lead order, for rows of :func:`record_frame`.

    ``clean`` drops noise, wander, mains and gain error (the heart's own signal).
    """
    b = len(frame)
    u = np.empty((b, _N_UNIFORM))
    e = np.empty((b, MAX_BEATS))
    wander_u = np.empty((b, N_MEASURED, 3, 3))
    mains_u = np.empty((b, N_MEASURED, 2))
    noise = np.empty((b, N_MEASURED, N_SAMPLES), dtype=np.float32)
    for i, study in enumerate(frame["study_id"].to_numpy()):
        rng = np.random.default_rng([seed, 0x516, int(study)])
        u[i] = rng.random(_N_UNIFORM)
        e[i] = rng.standard_normal(MAX_BEATS)
        wander_u[i] = rng.random((N_MEASURED, 3, 3))
        mains_u[i] = rng.random((N_MEASURED, 2))
        rng.standard_normal(out=noise[i], dtype=np.float32)
    p = beat_params(frame)
    r_times, rr_prev = beats.rhythm(p, u[:, 0:4], e)
    dip = beats.dipole(p, r_times, rr_prev, u[:, 0:2])
    if p.af.any():
        dip[p.af] += beats.fibrillatory_waves(u[p.af, 4:10], 0.05 + 0.1 * u[p.af, 10])
    measured = beats.project(dip)
    if not clean:
        resp_hz = 0.2 + 0.13 * u[:, 0]
        noise *= (frame["noise_mv"].to_numpy() * (0.7 + 0.6 * u[:, 11])).astype(np.float32)[:, None, None]
        measured += noise
        measured += artifacts.baseline_wander(wander_u, frame["wander_mv"].to_numpy(float), resp_hz)
        if "nuisance_mv" in frame:
            measured += artifacts.site_signature(frame["site"].to_numpy(), frame["nuisance_mv"].to_numpy(float), u[:, 13])
        measured += artifacts.powerline(frame["mains_hz"].to_numpy(int), frame["powerline_mv"].to_numpy(float) * (0.3 + 1.2 * u[:, 12]), mains_u)
        measured *= frame["gain"].to_numpy(np.float32)[:, None, None]
    return beats.derive_limb_leads(measured)


def render(cohort: ClinicalCohort, rows: np.ndarray | slice | None = None, *, clean: bool = False) -> np.ndarray:
    """Signals (B, 12, 5000) mV of the cohort's records (all, or a subset by position)."""
    return render_frame(record_frame(cohort, rows), cohort.seed, clean=clean)
