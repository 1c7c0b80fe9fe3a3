"""The evidence knobs of the synthetic cohort (clef_core.synth.risk_link): off by default, each one
does what it says, and the zero setting removes its term."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clef_core.synth import draw_clinical, generate_cohort, make_sites, render
from clef_core.synth.risk_link import RiskLink, hidden_factor

N = 160


def _draw(**knobs):
    return draw_clinical(N, make_sites(3, 0), 0, link=RiskLink(**knobs))


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_zero_knobs_give_the_default_cohort(tmp_path: Path):
    generate_cohort(tmp_path / "a", 20, 2, 3)
    generate_cohort(tmp_path / "b", 20, 2, 3, **RiskLink(risk_factor_age=0.5).as_dict())
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_zero_risk_signal_makes_the_risk_term_vanish():
    base = _draw()
    zero = _draw(risk_signal=0.0, risk_labels=True)  # h is computed but carries no weight
    assert np.array_equal(render(base, slice(0, 12), clean=True), render(zero, slice(0, 12), clean=True))
    strong = _draw(risk_signal=1.0)
    diff = render(strong, slice(0, 40), clean=True) - render(base, slice(0, 40), clean=True)
    assert np.abs(diff).max() > 0.05  # mV: the T wave and QT moved
    # the T-wave scale follows h: patients with h > 0 get smaller T waves
    subj = strong.subjects
    assert np.corrcoef(subj["risk_factor"], subj["t_scale"])[0, 1] < -0.99


def test_hidden_factor_age_share():
    rng = np.random.default_rng(0)
    age = rng.uniform(40, 89, 4000)
    risk = 1 / (1 + np.exp(-(-6 + 0.06 * age + rng.normal(0, 0.7, 4000))))
    for a in (0.0, 0.5, 1.0):
        h = hidden_factor(age, risk, a)
        assert abs(h.mean()) < 1e-9 and abs(h.std() - 1) < 1e-9
        assert np.corrcoef(h, age)[0, 1] == pytest.approx(a, abs=1e-6)


def test_risk_labels_depend_on_the_hidden_factor():
    c = draw_clinical(800, make_sites(3, 0), 1, link=RiskLink(risk_labels=True))
    rec = c.records
    assert "cvd_event" in rec and 0.15 < rec["cvd_event"].mean() < 0.4
    h = c.subjects.set_index("subject_id").loc[rec["subject_id"], "risk_factor"].to_numpy()
    assert h[rec["cvd_event"] == 1].mean() - h[rec["cvd_event"] == 0].mean() > 0.8


def test_site_nuisance_is_a_site_signature():
    base, nuis = _draw(), _draw(site_nuisance=1.0)
    rows = slice(0, 30)
    extra = render(nuis, rows) - render(base, rows)  # only the signature differs
    site = base.records["site"].to_numpy()[rows]
    spectrum = np.abs(np.fft.rfft(extra[:, 0], axis=1))
    peak_hz = np.fft.rfftfreq(extra.shape[-1], 1 / 500)[spectrum.argmax(axis=1)]
    for s in np.unique(site):
        assert np.ptp(peak_hz[site == s]) < 0.2  # one frequency per site
    assert len(np.unique(np.round(peak_hz))) == len(np.unique(site))


def test_site_links_move_risk_and_missingness():
    linked = draw_clinical(1, make_sites(3, 0), 0, link=RiskLink(site_risk_link=1.0, site_missing_link=1.0)).sites
    plain = make_sites(3, 0)
    assert [b.sbp_shift - a.sbp_shift for a, b in zip(plain, linked)] == pytest.approx([-20, 0, 20])
    assert linked[2].p_lab > plain[2].p_lab and linked[0].p_lab < plain[0].p_lab


def test_risk_coverage_sets_complete_inputs(tmp_path: Path):
    from clef_core.experiment import load_experiment
    from clef_core.metadata import extract_clinical_table

    settings = load_experiment().metadata
    out = tmp_path / "full"
    generate_cohort(out, 60, 2, 0, risk_coverage=1.0)
    table = extract_clinical_table(out, settings).table
    index = table[table["record_id"].astype(str).isin(pd.read_csv(out / "truth.csv", dtype=str)["index_study_id"])]
    in_domain = index["age"].between(40, 89)
    assert index.loc[in_domain, "risk"].notna().all()  # every input on file at the index ECG
    generate_cohort(tmp_path / "none", 60, 2, 0, risk_coverage=0.0, overwrite=True)
    none = extract_clinical_table(tmp_path / "none", settings).table
    assert none["risk"].isna().all()


def test_bad_knobs_are_named():
    with pytest.raises(ValueError, match="risk_factor_age"):
        RiskLink(risk_factor_age=2)
    with pytest.raises(ValueError, match="risk_coverage"):
        RiskLink(risk_coverage=1.5)
    with pytest.raises(TypeError, match="unknown"):
        generate_cohort("/nonexistent", 2, 1, 0, risk_signall=1.0)
