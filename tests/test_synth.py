"""The synthetic cohort: layout, WFDB validity, physiology, site effects, tables, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import butter, filtfilt, find_peaks
from scipy.stats import spearmanr

from clef.cli import main as clef_main
from clef_core.score2 import score2
from clef_core.synth import draw_clinical, generate_cohort, make_sites, render, score2_risk
from clef_core.synth.beats import LEADS
from clef_core.synth.signals import record_frame

PATIENTS, SITES, SEED = 40, 3, 7
MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(out, PATIENTS, SITES, SEED)
    return out


@pytest.fixture(scope="module")
def big_draw():
    """A 400-patient clinical draw (no files) for population-level checks."""
    return draw_clinical(400, make_sites(3, 11), 11)


def _read_gz(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"icd_code": str})


def test_layout_files_and_columns(cohort_dir: Path):
    expect = {
        "record_list.csv": ["subject_id", "study_id", "file_name", "ecg_time", "path"],
        "labels.csv": ["study_id", "subject_id", "af", "lvh", "high_risk", "conduction", "st_dep"],
        "hosp/patients.csv.gz": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
        "hosp/omr.csv.gz": ["subject_id", "chartdate", "seq_num", "result_name", "result_value"],
        "hosp/labevents.csv.gz": ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "charttime", "value", "valuenum", "valueuom"],
        "hosp/diagnoses_icd.csv.gz": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    }
    for name, cols in expect.items():
        assert list(pd.read_csv(cohort_dir / name, nrows=1).columns) == cols, name
    mm = pd.read_csv(cohort_dir / "machine_measurements.csv")
    assert list(mm.columns[:4]) == ["subject_id", "study_id", "cart_id", "ecg_time"]
    adm = pd.read_csv(cohort_dir / "hosp/admissions.csv.gz")
    assert list(adm.columns[:4]) == ["subject_id", "hadm_id", "admittime", "dischtime"]
    truth = pd.read_csv(cohort_dir / "truth.csv")
    for col in ("subject_id", "site", "age", "sex", "sbp", "total_chol", "hdl", "smoking", "diabetes", "risk"):
        assert col in truth.columns
    assert len(truth) == PATIENTS and truth["subject_id"].is_unique
    meta = json.loads((cohort_dir / "cohort.json").read_text())
    assert meta["seed"] == SEED and meta["args"]["patients"] == PATIENTS and len(meta["sites"]) == SITES
    assert meta["records"] == len(pd.read_csv(cohort_dir / "record_list.csv"))
    assert set(meta["labels"]) == {"af", "lvh", "high_risk", "conduction", "st_dep"}


def test_path_scheme_and_ids(cohort_dir: Path):
    rl = pd.read_csv(cohort_dir / "record_list.csv", dtype=str)
    assert rl["study_id"].is_unique
    for row in rl.itertuples():
        assert re.fullmatch(r"1\d{7}", row.subject_id) and re.fullmatch(r"\d{8}", row.study_id)
        assert row.path == f"files/p{row.subject_id[:4]}/p{row.subject_id}/s{row.study_id}/{row.study_id}"
        assert row.file_name == row.study_id
        assert re.fullmatch(r"21\d\d-\d\d-\d\d \d\d:\d\d:\d\d", row.ecg_time)
        assert (cohort_dir / f"{row.path}.hea").is_file() and (cohort_dir / f"{row.path}.dat").stat().st_size == 5000 * 12 * 2
    # labels and machine measurements cover exactly the records
    assert set(pd.read_csv(cohort_dir / "labels.csv", dtype=str)["study_id"]) == set(rl["study_id"])
    assert set(pd.read_csv(cohort_dir / "machine_measurements.csv", dtype=str)["study_id"]) == set(rl["study_id"])


def test_wfdb_records_read_back(cohort_dir: Path):
    rl = pd.read_csv(cohort_dir / "record_list.csv")
    for path in rl["path"].iloc[:5]:
        rec = wfdb.rdrecord(str(cohort_dir / path))
        assert rec.sig_name == MIMIC_LEADS and list(LEADS) == MIMIC_LEADS
        assert rec.fs == 500 and rec.sig_len == 5000 and rec.p_signal.shape == (5000, 12)
        assert set(rec.fmt) == {"16"} and set(rec.adc_gain) == {200.0} and set(rec.units) == {"mV"}
        x = rec.p_signal
        assert np.isfinite(x).all() and np.abs(x).max() < 6.0
        assert 0.3 < np.ptp(x[:, 1]) < 6.0  # lead II: a real QRS, not a flat line
        raw = wfdb.rdrecord(str(cohort_dir / path), physical=False)
        assert list(raw.checksum) == list(raw.d_signal.astype(np.int64).sum(axis=0) & 0xFFFF)
        assert list(raw.init_value) == list(raw.d_signal[0])


def test_limb_leads_obey_einthoven(cohort_dir: Path):
    rl = pd.read_csv(cohort_dir / "record_list.csv")
    tol = 1.5 / 200 + 1e-9  # three roundings to 1/200 mV
    for path in rl["path"].iloc[:8]:
        x = wfdb.rdrecord(str(cohort_dir / path)).p_signal
        i, ii, iii, avr, avf, avl = (x[:, k] for k in range(6))
        assert np.abs(iii - (ii - i)).max() <= tol
        assert np.abs(avr + (i + ii) / 2).max() <= tol
        assert np.abs(avf - (ii - i / 2)).max() <= tol
        assert np.abs(avl - (i - ii / 2)).max() <= tol
        assert np.abs(i).max() > 0.05 and np.abs(iii).max() > 0.05


def test_files_equal_rendered_signals(cohort_dir: Path):
    """What is written is the model's signal, quantised; rendering is batch-independent."""
    clin = draw_clinical(PATIENTS, make_sites(SITES, SEED), SEED)
    rows = np.array([3, 0, 5])
    sig = render(clin, rows)
    for k, row in enumerate(rows):
        r = clin.records.iloc[row]
        sub, study = f"{r.subject_id:08d}", f"{r.study_id:08d}"
        x = wfdb.rdrecord(str(cohort_dir / f"files/p{sub[:4]}/p{sub}/s{study}/{study}")).p_signal
        assert np.abs(x.T - sig[k]).max() <= 0.5 / 200 + 1e-6


def test_patient_ecgs_come_from_one_sites_carts(cohort_dir: Path):
    meta = json.loads((cohort_dir / "cohort.json").read_text())
    cart_site = {c: s["site"] for s in meta["sites"] for c in s["cart_ids"]}
    assert len(cart_site) == sum(len(s["cart_ids"]) for s in meta["sites"])  # carts are not shared
    mm = pd.read_csv(cohort_dir / "machine_measurements.csv")
    mm["site"] = mm["cart_id"].map(cart_site)
    assert mm["site"].notna().all()
    assert (mm.groupby("subject_id")["site"].nunique() == 1).all()
    truth = pd.read_csv(cohort_dir / "truth.csv").set_index("subject_id")
    assert (mm["site"].to_numpy() == truth.loc[mm["subject_id"], "site"].to_numpy()).all()
    assert mm["site"].nunique() == SITES
    assert mm.groupby("subject_id").size().max() > 1  # some patients have several ECGs


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_from_seed(cohort_dir: Path, tmp_path: Path):
    generate_cohort(tmp_path / "again", PATIENTS, SITES, SEED)
    a, b = _tree_bytes(cohort_dir), _tree_bytes(tmp_path / "again")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    generate_cohort(tmp_path / "other", PATIENTS, SITES, SEED + 1)
    c = _tree_bytes(tmp_path / "other")
    assert c["record_list.csv"] != a["record_list.csv"] and c["truth.csv"] != a["truth.csv"]
    dat_a = [v for k, v in a.items() if k.endswith(".dat")]
    dat_c = [v for k, v in c.items() if k.endswith(".dat")]
    assert not set(dat_a) & set(dat_c)


def test_refuses_to_overwrite_and_cli(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    assert clef_main(["synth", "--out", str(out), "--patients", "6", "--sites", "2", "--seed", "3", "--no-progress"]) == 0
    assert "6 patients" in capsys.readouterr().out
    assert json.loads((out / "cohort.json").read_text())["args"]["sites"] == 2
    assert clef_main(["synth", "--out", str(out), "--patients", "6", "--no-progress"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert clef_main(["synth", "--out", str(tmp_path / "bad"), "--patients", "0", "--no-progress"]) == 1
    assert "patients" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]  # nothing half-written
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic cohort"):
        generate_cohort(tmp_path / "user", 3, 1, 0, overwrite=True)


def test_clinical_correlations(big_draw):
    s = big_draw.subjects
    male = s["sex"] == "male"
    assert spearmanr(s["age"], s["sbp"])[0] > 0.2
    assert spearmanr(s["age"], s["smoking"])[0] < -0.1
    assert spearmanr(s["age"], s["diabetes"])[0] > 0.05
    assert spearmanr(s["metab"], s["diabetes"])[0] > 0.1
    assert s.loc[male, "hdl"].mean() < s.loc[~male, "hdl"].mean() - 0.15
    assert spearmanr(s["sbp"], s["lvmi"])[0] > 0.3
    assert ((s["age"] < 40).sum() > 5) and ((s["age"] > 89).sum() > 2)
    outside = (s["age"] < 40) | (s["age"] > 89)
    assert s.loc[outside, "score2"].isna().all() and s.loc[~outside, "score2"].notna().all()
    assert s["total_chol"].between(2.3, 10.5).all() and s["hdl"].between(0.5, 3.3).all()
    # the true risk is SCORE2 of the true inputs (checked through the strict scalar entry point)
    for r in s[~outside].head(20).itertuples():
        assert r.score2 == pytest.approx(score2(r.age, r.sex, r.sbp, r.total_chol, r.hdl, r.smoking, r.diabetes, big_draw.region))
    rec = big_draw.records
    older = rec["age"] >= 70
    assert rec.loc[older, "af"].mean() > 2 * rec.loc[~older, "af"].mean()


def test_score2_published_examples():
    risk = score2_risk([50, 50], [True, False], [140, 140], [5.5, 5.5], [1.3, 1.3], [1, 1], [0, 0], "low")
    np.testing.assert_allclose(risk, [0.059, 0.042], atol=0.0006)
    risk = score2_risk([50, 50], [True, False], [140, 140], [5.5, 5.5], [1.3, 1.3], [1, 1], [0, 0], "very high")
    np.testing.assert_allclose(risk, [0.140, 0.137], atol=0.0006)
    assert np.isnan(score2_risk([39, 90], [1, 0], [140] * 2, [5.5] * 2, [1.3] * 2, [1] * 2, [0] * 2)).all()


def _rr_cv(x: np.ndarray) -> float:
    """Rough QRS detector: 5-25 Hz energy over all leads, peaks >= 0.28 s apart; RR coefficient of variation."""
    b, a = butter(2, [5 / 250, 25 / 250], btype="band")
    energy = (np.diff(filtfilt(b, a, x, axis=-1), axis=-1) ** 2).sum(axis=0)
    peaks, _ = find_peaks(energy, distance=140, height=0.25 * np.percentile(energy, 99.5))
    rr = np.diff(peaks)
    return float(rr.std() / rr.mean())


def test_af_records_have_irregular_rr(big_draw):
    rec = big_draw.records
    af = np.nonzero(rec["af"].to_numpy() == 1)[0][:15]
    sinus = np.nonzero(rec["af"].to_numpy() == 0)[0][:30]
    assert len(af) >= 8
    cv_af = [_rr_cv(x) for x in render(big_draw, af)]
    cv_sinus = [_rr_cv(x) for x in render(big_draw, sinus)]
    assert np.median(cv_af) > 0.12 and np.median(cv_sinus) < 0.06
    assert np.median(cv_af) > 3 * np.median(cv_sinus)


def test_lvh_raises_v5_voltage_and_sbp_drives_it(big_draw):
    frame = record_frame(big_draw)
    lvh = np.nonzero(frame["lvh"].to_numpy() == 1)[0][:25]
    normal = np.nonzero((frame["lvh"].to_numpy() == 0) & (frame["conduction"].to_numpy() == 0))[0][:50]
    assert len(lvh) >= 10
    v5 = LEADS.index("V5")

    def r_amp(rows):
        x = render(big_draw, rows, clean=True)[:, v5]
        return x.max(axis=1) - np.median(x, axis=1)

    assert np.median(r_amp(lvh)) > 1.25 * np.median(r_amp(normal))
    both = np.r_[lvh, normal]
    assert spearmanr(frame["sbp"].to_numpy()[both], r_amp(both))[0] > 0.2


def test_sites_differ_in_mains_frequency(big_draw):
    frame = record_frame(big_draw)
    for hz, other in ((60, 50), (50, 60)):
        rows = np.nonzero((frame["mains_hz"].to_numpy() == hz) & (frame["powerline_mv"].to_numpy() > 0.004))[0][:4]
        assert len(rows)
        artefact = render(big_draw, rows) - render(big_draw, rows, clean=True)
        spec = np.abs(np.fft.rfft(artefact[:, 0], axis=-1)) ** 2  # lead I, 0.1 Hz bins
        assert (spec[:, hz * 10] > 20 * spec[:, other * 10]).all()
    gains = [s.gain for s in big_draw.sites]
    assert len(set(gains)) == len(gains) and len({s.noise_mv for s in big_draw.sites}) == len(big_draw.sites)


def test_hosp_tables_consistent_with_truth(cohort_dir: Path):
    truth = pd.read_csv(cohort_dir / "truth.csv", parse_dates=["index_ecg_time"]).set_index("subject_id")
    labs = _read_gz(cohort_dir / "hosp/labevents.csv.gz")
    assert set(labs.loc[labs["itemid"].isin([50907, 50904]), "valueuom"]) == {"mg/dL"}
    labs["charttime"] = pd.to_datetime(labs["charttime"])
    labs = labs[~labs["itemid"].isin([50852, 51070]) & ~labs["specimen_id"].ge(100_000_000)]  # lipid panels (kidney / glucose: test_synth_risk_inputs)
    omr = _read_gz(cohort_dir / "hosp/omr.csv.gz")
    omr["chartdate"] = pd.to_datetime(omr["chartdate"])
    window = pd.Timedelta(days=365)
    checked_labs = checked_bp = 0
    for sid, t in truth.iterrows():
        ecg = t["index_ecg_time"]
        mine = labs[(labs["subject_id"] == sid) & (labs["charttime"] < ecg) & (labs["charttime"] >= ecg - window)]
        assert bool(len(mine)) == bool(t["labs_on_file"])
        if len(mine):
            last = mine[mine["charttime"] == mine["charttime"].max()].set_index("itemid")["valuenum"]
            assert abs(last[50907] / 38.67 - t["total_chol"]) < 0.5 / 38.67 + 1e-9
            assert abs(last[50904] / 38.67 - t["hdl"]) < 0.5 / 38.67 + 1e-9
            checked_labs += 1
        bp = omr[(omr["subject_id"] == sid) & (omr["result_name"] == "Blood Pressure") & (omr["chartdate"] < ecg.normalize()) & (omr["chartdate"] >= ecg - window)]
        assert bool(len(bp)) == bool(t["bp_on_file"])
        if len(bp):
            value = bp.sort_values("chartdate")["result_value"].iloc[-1]
            assert re.fullmatch(r"\d{2,3}/\d{2,3}", value) and int(value.split("/")[0]) == t["sbp"]
            checked_bp += 1
    assert checked_labs >= 3 and checked_bp >= 15
    # decoys exist: lipid panels outside the window or after the ECG, with other values
    assert len(labs[labs["itemid"] == 50907]) > checked_labs


def test_diagnoses_match_truth_and_era(cohort_dir: Path):
    dx = _read_gz(cohort_dir / "hosp/diagnoses_icd.csv.gz")
    adm = pd.read_csv(cohort_dir / "hosp/admissions.csv.gz", parse_dates=["admittime", "dischtime"])
    truth = pd.read_csv(cohort_dir / "truth.csv").set_index("subject_id")
    assert not dx["icd_code"].str.contains(r"\.").any() and set(dx["icd_version"]) <= {9, 10}
    assert set(dx["hadm_id"]) <= set(adm["hadm_id"]) and set(dx["subject_id"]) <= set(truth.index[truth["admitted"] == 1])
    diab = dx["icd_code"].str.match(r"^(E1[0-3]|250)")
    diab_subj = truth.loc[dx.loc[diab, "subject_id"]]
    assert ((diab_subj["diabetes"] == 1) | (diab_subj["later_diabetes"] == 1)).all()
    # ICD version follows the real (unshifted) date: ICD-10 from October 2015
    d = dx.merge(adm[["hadm_id", "admittime"]], on="hadm_id")
    shift = truth.loc[d["subject_id"], "anchor_year"].to_numpy() - truth.loc[d["subject_id"], "real_anchor_year"].to_numpy()
    real_year = d["admittime"].dt.year.to_numpy() - shift
    assert (d.loc[real_year <= 2014, "icd_version"] == 9).all() and (d.loc[real_year >= 2016, "icd_version"] == 10).all()
    assert {9, 10} <= set(d["icd_version"])


def test_anchor_age_capped_like_mimic(cohort_dir: Path, big_draw):
    pts = pd.read_csv(cohort_dir / "hosp/patients.csv.gz").set_index("subject_id")
    truth = pd.read_csv(cohort_dir / "truth.csv").set_index("subject_id")
    assert pts["anchor_age"].max() <= 91 and not pts["anchor_age"].between(90, 90).any()
    old = truth["anchor_age_true"] > 89
    assert (pts.loc[old[old].index, "anchor_age"] == 91).all()
    young = truth.index[~old]
    assert (pts.loc[young, "anchor_age"] == truth.loc[young, "anchor_age_true"]).all()
    assert set(pts["gender"]) <= {"M", "F"} and pts["anchor_year"].between(2110, 2190).all()
    # age at ECG = anchor_age + year(ecg_time) - anchor_year, as the extractor computes it
    rl = pd.read_csv(cohort_dir / "record_list.csv", parse_dates=["ecg_time"]).join(pts, on="subject_id")
    first = rl.sort_values("ecg_time").groupby("subject_id").first()
    age = first["anchor_age"] + first["ecg_time"].dt.year - first["anchor_year"]
    ok = truth.loc[first.index, "anchor_age_true"] <= 89
    assert (age[ok] == truth.loc[first.index[ok], "age"]).all()
    s = big_draw.subjects
    assert (s["anchor_age_true"] > 89).any()
