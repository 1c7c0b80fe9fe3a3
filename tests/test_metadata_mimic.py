"""Clinical metadata from small, hand-made MIMIC-IV tables with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clef_core.metadata import extract_clinical_table, load_clinical_table, save_clinical_table
from clef_core.score2 import score2

# subject 1: everything on file, with decoys (after the ECG, older than the window, older readings)
# subject 2: anchor_age 91 (MIMIC's ">89")
# subject 3: BP only too old or garbage, lab only after the ECG, ICD-9 codes
# subject 4: only in patients: everything else missing, never 0
# subject 5: admissions in the window without a code; a diabetes code older than the window
RECORDS = [
    (1, 101, "2150-06-01 10:00:00"),
    (1, 102, "2150-06-10 09:00:00"),
    (2, 201, "2160-03-01 08:00:00"),
    (3, 301, "2150-06-01 10:00:00"),
    (4, 401, "2150-06-01 10:00:00"),
    (5, 501, "2150-06-01 10:00:00"),
]
PATIENTS = [(1, "M", 50, 2148), (2, "F", 91, 2158), (3, "F", 60, 2150), (4, "M", 45, 2150), (5, "F", 70, 2149)]
OMR = [
    (1, "2149-01-01", 1, "Blood Pressure", "110/70"),  # older than 365 days
    (1, "2150-05-01", 1, "Blood Pressure", "130/85"),
    (1, "2150-05-20", 1, "Blood Pressure", "150/90"),  # nearest before ECG 101
    (1, "2150-05-20", 1, "Weight (Lbs)", "180"),
    (1, "2150-05-20", 1, "BMI (kg/m2)", "31.2"),
    (1, "2150-06-02", 1, "Blood Pressure", "180/100"),  # after ECG 101, nearest before ECG 102
    (3, "2148-01-01", 1, "Blood Pressure", "120/80"),  # older than the window
    (3, "2150-05-15", 1, "Blood Pressure", "abc"),  # garbage: reported, missing
    (5, "2150-05-31", 1, "Blood Pressure", "400/90"),  # implausible: reported, missing
]
LABS = [  # labevent_id, subject, hadm, specimen, itemid, charttime, value, valuenum, valueuom
    (1, 1, None, 1, 50907, "2150-05-30 08:00:00", "212.7", 212.7, "mg/dL"),  # TC 5.5 mmol/L
    (2, 1, None, 2, 50907, "2150-06-01 12:00:00", "300", 300.0, "mg/dL"),  # after ECG 101
    (3, 1, None, 1, 50904, "2150-05-30 08:00:00", "50.27", 50.27, "mg/dL"),  # HDL 1.3 mmol/L
    (4, 1, None, 3, 50904, "2148-05-30 08:00:00", "80", 80.0, "mg/dL"),  # too old
    (5, 3, None, 4, 50907, "2150-07-01 08:00:00", "190", 190.0, "mg/dL"),  # after the ECG
    (6, 5, None, 5, 50907, "2150-04-01 08:00:00", "5.2", 5.2, "mmol/L"),  # already mmol/L
    (7, 5, None, 5, 50904, "2150-04-01 08:00:00", "___", None, "mg/dL"),  # unparsable
    (8, 1, None, 1, 50912, "2150-05-30 08:00:00", "1.0", 1.0, "mg/dL"),  # creatinine -> eGFR
    (9, 1, None, 6, 50912, "2150-06-05 08:00:00", "2.0", 2.0, "mg/dL"),  # after ECG 101, before 102
    (10, 1, None, 1, 50852, "2150-05-30 08:00:00", "7.5", 7.5, "%"),  # HbA1c
    (11, 1, None, 7, 51070, "2150-05-30 09:00:00", "30", 30.0, "mg/g"),  # urine albumin/creatinine
]
PRESCRIPTIONS = [  # subject, starttime, drug
    (1, "2150-05-01 10:00:00", "Lisinopril"),
    (1, "2150-06-03 10:00:00", "Atorvastatin"),  # after ECG 101, before 102
    (5, "2150-05-01 10:00:00", "Acetaminophen"),  # prescriptions, none antihypertensive or statin
]
ADMISSIONS = [  # subject, hadm, admittime, dischtime
    (1, 1001, "2149-06-01 00:00:00", "2149-06-05 00:00:00"),
    (1, 1002, "2150-06-05 00:00:00", "2150-06-08 00:00:00"),  # after ECG 101, before ECG 102
    (3, 3001, "2145-03-01 00:00:00", "2145-03-04 00:00:00"),
    (5, 5001, "2130-01-01 00:00:00", "2130-01-03 00:00:00"),  # older than the 3650-day window
    (5, 5002, "2149-01-01 00:00:00", "2149-01-03 00:00:00"),
    (2, 2001, "2160-02-28 00:00:00", "2160-03-05 00:00:00"),  # ECG 201 during this stay
]
DIAGNOSES = [  # subject, hadm, seq, code, version
    (1, 1001, 1, "E119", 10),
    (1, 1002, 1, "F17210", 10),
    (3, 3001, 1, "25000", 9),
    (3, 3001, 2, "3051", 9),
    (5, 5001, 1, "E119", 10),
    (5, 5002, 1, "N179", 10),
    (2, 2001, 1, "E1165", 10),
]


def write_cohort(root: Path, hosp: Path | None = None, skip: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    hosp = hosp or root / "hosp"
    hosp.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [(s, st, f"{st}", t, f"files/p{str(s).zfill(8)[:4]}/p{s}/s{st}/{st}") for s, st, t in RECORDS],
        columns=["subject_id", "study_id", "file_name", "ecg_time", "path"],
    ).to_csv(root / "record_list.csv", index=False)
    tables = {
        "patients": pd.DataFrame(PATIENTS, columns=["subject_id", "gender", "anchor_age", "anchor_year"]).assign(anchor_year_group="2008 - 2010", dod=None),
        "omr": pd.DataFrame(OMR, columns=["subject_id", "chartdate", "seq_num", "result_name", "result_value"]),
        "labevents": pd.DataFrame(LABS, columns=["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "charttime", "value", "valuenum", "valueuom"]),
        "admissions": pd.DataFrame(ADMISSIONS, columns=["subject_id", "hadm_id", "admittime", "dischtime"]),
        "diagnoses_icd": pd.DataFrame(DIAGNOSES, columns=["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]),
        "prescriptions": pd.DataFrame(PRESCRIPTIONS, columns=["subject_id", "starttime", "drug"]),
    }
    for name, table in tables.items():
        if name not in skip:
            table.to_csv(hosp / f"{name}.csv.gz", index=False)
    return root


@pytest.fixture()
def cohort(tmp_path) -> Path:
    return write_cohort(tmp_path / "cohort")


def rows(ct) -> dict[str, pd.Series]:
    return {r["record_id"]: r for _, r in ct.table.iterrows()}


def test_values_are_nearest_before_the_ecg_within_the_window(cohort):
    lines = []
    ct = extract_clinical_table(cohort, progress=lines.append)
    assert lines[0].startswith("record_list") and any("rows read" in x for x in lines)  # a line per step
    r = rows(ct)
    a = r["101"]
    assert a["subject_id"] == "1" and a["age"] == 52 and a["sex"] == "male"
    assert a["sbp"] == 150 and a["src_sbp"] == "omr 2150-05-20"
    assert a["total_chol"] == pytest.approx(212.7 / 38.67) and a["total_chol"] == pytest.approx(5.5, abs=0.01)
    assert a["hdl"] == pytest.approx(50.27 / 38.67) and a["hdl"] == pytest.approx(1.3, abs=0.01)
    assert a["src_total_chol"].startswith("labevents 50907 2150-05-30")
    assert a["diabetes"] == 1 and a["src_diabetes"] == "diagnoses_icd"
    assert a["smoking"] == 0 and a["src_smoking"] == "admissions without code"  # F17210 comes later
    assert a["completeness"] == 1.0 and a["risk_reason"] == ""
    assert a["risk"] == pytest.approx(score2(52, "male", 150, 212.7 / 38.67, 50.27 / 38.67, 0, 1, "low"))
    # The second ECG of the same subject sees the readings that came after the first one.
    b = r["102"]
    assert b["sbp"] == 180 and b["total_chol"] == pytest.approx(300 / 38.67) and b["smoking"] == 1


def test_prevent_inputs_with_provenance(cohort):
    from clef_core.risk.egfr import ckd_epi_2021

    r = rows(extract_clinical_table(cohort, risk_model="prevent"))
    a, b = r["101"], r["102"]
    assert a["bmi"] == 31.2 and a["src_bmi"] == "omr BMI 2150-05-20"
    assert a["egfr"] == pytest.approx(ckd_epi_2021(1.0, 52, True)) and a["src_egfr"].startswith("CKD-EPI 2021 of labevents 50912 creatinine 1 mg/dL")
    assert b["egfr"] == pytest.approx(ckd_epi_2021(2.0, 52, True))  # the later creatinine
    assert a["hba1c"] == 7.5 and a["uacr"] == 30 and a["src_uacr"].startswith("labevents 51070")
    assert a["bp_treated"] == 1 and a["statin"] == 0 and a["src_statin"] == "prescriptions without one"
    assert b["statin"] == 1 and b["src_statin"] == "prescriptions"
    assert r["501"]["bp_treated"] == 0 and math.isnan(r["301"]["bp_treated"]) and r["301"]["src_bp_treated"] == ""
    assert a["diabetes_age"] == 51 and "upper bound" in a["src_diabetes_age"]  # first diabetes code 2149-06-01
    assert a["risk_model"] == "prevent" and a["model"] == "PREVENT-base" and a["risk_reason"] == ""
    assert a["risk"] == pytest.approx(risk_of_person_total_cvd(a), abs=1e-6)
    assert "bmi missing" in r["301"]["risk_reason"] and "egfr missing" in r["301"]["risk_reason"]


def risk_of_person_total_cvd(row) -> float:
    from clef_core.risk import risk_of_person

    keys = ("age", "sex", "sbp", "total_chol", "hdl", "smoking", "diabetes", "bmi", "egfr", "bp_treated", "statin")
    return risk_of_person("prevent", {k: str(row[k]) for k in keys})["risk"]["10y"]["total_cvd"]


def test_missing_prescriptions_table_is_reported(tmp_path):
    ct = extract_clinical_table(write_cohort(tmp_path / "c", skip=("prescriptions",)))
    assert ct.table["bp_treated"].isna().all()
    assert (ct.problems["message"].str.contains("table not found: bp_treated and statin")).sum() == 1


def test_anchor_age_91_means_age_unknown(cohort):
    r = rows(extract_clinical_table(cohort))["201"]
    assert math.isnan(r["age"]) and r["sex"] == "female"
    assert "capped" in r["src_age"]
    assert math.isnan(r["risk"]) and r["risk_reason"].startswith("age >89 (MIMIC anchor_age 91)")


def test_old_garbage_and_later_values_are_missing_and_reported(cohort):
    ct = extract_clinical_table(cohort)
    r = rows(ct)["301"]
    assert math.isnan(r["sbp"]) and math.isnan(r["total_chol"]) and r["src_sbp"] == ""
    assert r["diabetes"] == 1 and r["smoking"] == 1  # ICD-9 250.00 and 305.1
    p = ct.problems
    garbage = p[(p["field"] == "sbp") & (p["raw_value"] == "abc")]
    assert len(garbage) == 1 and garbage["subject_id"].iloc[0] == "3" and garbage["source"].iloc[0] == "omr.csv.gz"
    assert ((p["field"] == "sbp") & (p["raw_value"] == "400/90")).sum() == 1
    assert ((p["field"] == "hdl") & (p["raw_value"].str.startswith("___"))).sum() == 1


def test_missing_rows_are_nan_never_zero(cohort):
    r = rows(extract_clinical_table(cohort))["401"]
    assert r["age"] == 45 and r["sex"] == "male"
    for field in ("sbp", "total_chol", "hdl", "smoking", "diabetes"):
        assert math.isnan(r[field]), field
    assert r["completeness"] == pytest.approx(2 / 7) and math.isnan(r["risk"])
    assert r["risk_reason"] == "sbp missing; total_chol missing; hdl missing; smoking missing; diabetes missing"


def test_admissions_without_code_and_the_diagnosis_window(cohort):
    r = rows(extract_clinical_table(cohort))["501"]
    # E119 of 2130 is older than the window; the 2149 admission has only N179.
    assert r["diabetes"] == 0 and r["smoking"] == 0
    assert r["total_chol"] == pytest.approx(5.2)  # reported in mmol/L: not converted again
    strict = rows(extract_clinical_table(cohort, absent_code_is_negative=False))["501"]
    assert math.isnan(strict["diabetes"]) and math.isnan(strict["smoking"])
    wide = rows(extract_clinical_table(cohort, diagnosis_window_days=9000))["501"]
    assert wide["diabetes"] == 1


def test_windows_are_settings(cohort):
    r = rows(extract_clinical_table(cohort, window_days=5))["101"]
    assert math.isnan(r["sbp"]) and r["total_chol"] == pytest.approx(5.5, abs=0.01)  # BP 12 days old, lab 2 days
    r = rows(extract_clinical_table(cohort, window_days=1000))["301"]
    assert r["sbp"] == 120


def test_dischtime_dates_codes_strictly_before(tmp_path):
    root = write_cohort(tmp_path / "c")
    # ECG 201 was taken during admission 2001: its codes count by admittime, not by dischtime.
    assert rows(extract_clinical_table(root))["201"]["diabetes"] == 1
    strict = rows(extract_clinical_table(root, diagnosis_time="dischtime"))
    assert math.isnan(strict["201"]["diabetes"])
    assert strict["102"]["smoking"] == 1  # admission 1002 ended before ECG 102
    with pytest.raises(ValueError, match="diagnosis_time"):
        extract_clinical_table(root, diagnosis_time="chartdate")


def test_hosp_dir_setting_and_missing_tables(tmp_path):
    root = write_cohort(tmp_path / "ecg", hosp=tmp_path / "hosp_elsewhere", skip=("labevents",))
    ct = extract_clinical_table(root, hosp_dir=str(tmp_path / "hosp_elsewhere"))
    t = ct.table.set_index("record_id")
    assert t.loc["101", "sbp"] == 150
    assert t["total_chol"].isna().all() and t["hdl"].isna().all()
    assert (ct.problems["field"] == "labevents").sum() == 1
    assert "not found" in ct.problems.loc[ct.problems["field"] == "labevents", "message"].iloc[0]


def test_policy_region_recorded_and_round_trip(cohort, tmp_path):
    ct = extract_clinical_table(cohort, region="very_high", policy="impute_reference")
    assert (ct.table["policy"] == "impute_reference").all() and (ct.table["region"] == "very high").all()
    assert ct.settings["reference_population"] and ct.settings["kind"] == "mimic"
    r = rows(ct)["401"]
    assert r["imputed"] == "sbp,total_chol,hdl,smoking,diabetes" and r["risk"] > 0
    path = save_clinical_table(ct, tmp_path / "out" / "clinical.csv")
    assert (tmp_path / "out" / "clinical.problems.csv").is_file() and (tmp_path / "out" / "clinical.json").is_file()
    back = load_clinical_table(path)
    assert back.settings["policy"] == "impute_reference" and back.settings["region"] == "very high"
    pd.testing.assert_frame_equal(back.table[["record_id", "subject_id", "age", "sbp", "risk", "completeness"]], ct.table[["record_id", "subject_id", "age", "sbp", "risk", "completeness"]], check_dtype=False)
    assert back.table["ecg_time"].dtype.kind == "M" and back.table["record_id"].tolist() == ct.table["record_id"].tolist()
    assert back.table.loc[back.table["record_id"] == "201", "sex"].iloc[0] == "female"
    assert len(back.problems) == len(ct.problems)


def test_from_config_and_cli(cohort, tmp_path, capsys):
    from clef.cli import main
    from clef_core.experiment import load_experiment

    settings = load_experiment(overrides=["score2.region=\"high\"", "metadata.window_days=30"]).metadata
    assert settings.risk.region == "high" and settings.window_days == 30
    out = tmp_path / "t.csv"
    assert main(["metadata", str(cohort), "--out", str(out), "--set", "score2.missing_policy=\"impute_reference\""]) == 0
    printed = capsys.readouterr().out
    assert "records 6" in printed and "problems 3" in printed and "impute_reference" in printed
    assert len(pd.read_csv(out)) == 6
    assert main(["metadata", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_scales_without_row_loops(tmp_path):
    # 20K ECGs of 5K subjects with 60K BP readings: vectorised merges keep this well under seconds.
    rng = np.random.default_rng(0)
    n_sub, n_ecg, n_bp = 5000, 20000, 60000
    root = tmp_path / "big"
    (root / "hosp").mkdir(parents=True)
    base = np.datetime64("2150-01-01T00:00:00")
    subj = rng.integers(1, n_sub + 1, n_ecg)
    ecg_time = base + rng.integers(0, 3 * 365 * 86400, n_ecg).astype("timedelta64[s]")
    pd.DataFrame({"subject_id": subj, "study_id": np.arange(n_ecg) + 10_000_000, "file_name": "x", "ecg_time": pd.to_datetime(ecg_time).strftime("%Y-%m-%d %H:%M:%S"), "path": "x"}).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame({"subject_id": np.arange(1, n_sub + 1), "gender": rng.choice(["M", "F"], n_sub), "anchor_age": rng.integers(18, 92, n_sub), "anchor_year": 2150}).to_csv(root / "hosp" / "patients.csv", index=False)
    bp_time = base + rng.integers(0, 3 * 365, n_bp).astype("timedelta64[D]")
    pd.DataFrame({"subject_id": rng.integers(1, n_sub + 1, n_bp), "chartdate": pd.to_datetime(bp_time).strftime("%Y-%m-%d"), "seq_num": 1, "result_name": "Blood Pressure", "result_value": [f"{s}/80" for s in rng.integers(95, 190, n_bp)]}).to_csv(root / "hosp" / "omr.csv", index=False)
    import time

    t0 = time.perf_counter()
    ct = extract_clinical_table(root)
    elapsed = time.perf_counter() - t0
    assert len(ct.table) == n_ecg and ct.table["sbp"].notna().mean() > 0.5
    assert elapsed < 20, elapsed
    # Spot-check the vectorised answer against a direct search for a few records.
    omr = pd.read_csv(root / "hosp" / "omr.csv")
    omr["t"] = pd.to_datetime(omr["chartdate"])
    for _, rec in ct.table.sample(20, random_state=0).iterrows():
        cand = omr[(omr["subject_id"] == int(rec["subject_id"])) & (omr["t"] <= rec["ecg_time"]) & (omr["t"] >= rec["ecg_time"] - pd.Timedelta(days=365))]
        if cand.empty:
            assert math.isnan(rec["sbp"])
        else:
            latest = cand[cand["t"] == cand["t"].max()]
            assert rec["sbp"] in set(latest["result_value"].str.split("/").str[0].astype(float))
