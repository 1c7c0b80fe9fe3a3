"""The synthetic cohort writes the PREVENT / PCE / SCORE2-Diabetes inputs, and the MIMIC extractor
finds them again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clef_core.metadata import extract_clinical_table
from clef_core.risk.prevent import prevent_core
from clef_core.synth import generate_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("risk_inputs") / "cohort"
    generate_cohort(root, patients=160, sites=2, seed=3)
    return root


def _joined(cohort: Path, model: str) -> pd.DataFrame:
    table = extract_clinical_table(cohort, risk_model=model).table
    truth = pd.read_csv(cohort / "truth.csv", dtype={"subject_id": str, "index_study_id": str}).set_index("index_study_id")
    index = table[table["record_id"].isin(truth.index)].set_index("record_id")
    return index.merge(truth, left_index=True, right_index=True, suffixes=("", "_true"))


def test_tables_hold_the_new_inputs(cohort):
    rx = pd.read_csv(cohort / "hosp" / "prescriptions.csv.gz")
    assert list(rx.columns) == ["subject_id", "hadm_id", "starttime", "stoptime", "drug_type", "drug", "route"]
    labs = pd.read_csv(cohort / "hosp" / "labevents.csv.gz")
    assert {50912, 50852, 51070} <= set(labs["itemid"])
    omr = pd.read_csv(cohort / "hosp" / "omr.csv.gz")
    assert (omr["result_name"] == "BMI (kg/m2)").any()


def test_extractor_recovers_the_truth(cohort):
    j = _joined(cohort, "prevent")
    for field in ("bmi", "hba1c", "uacr"):
        have = j[field].notna()
        assert have.sum() > 5, field
        assert np.allclose(j.loc[have, field], j.loc[have, f"{field}_true"]), field
    have = j["egfr"].notna()
    exact = np.isclose(j.loc[have, "egfr"], j.loc[have, "egfr_true"], atol=0.01)
    assert exact.mean() > 0.9  # the rest: an older, in-window creatinine of a lipid panel
    for field in ("bp_treated", "statin"):
        found = j[field] == 1
        assert found.sum() > 5 and (j.loc[found, f"{field}_true"] == 1).all(), field  # no false positives (decoys come later)
    assert (j["diabetes_age"].dropna() <= j.loc[j["diabetes_age"].notna(), "age"]).all()


def test_truth_prevent_is_the_formula(cohort):
    truth = pd.read_csv(cohort / "truth.csv")
    x = {k: truth[k].to_numpy(float) for k in ("age", "sbp", "total_chol", "hdl", "smoking", "diabetes", "bmi", "egfr", "bp_treated", "statin")}
    expected = prevent_core(x, (truth["sex"] == "male").to_numpy(), 10, "base")["total_cvd"]
    assert np.allclose(truth["prevent"], expected, equal_nan=True)
    assert truth.loc[truth["age"].between(30, 79), "prevent"].notna().all()


@pytest.mark.parametrize("model", ["prevent", "pce", "score2_diabetes"])
def test_every_model_is_defined_somewhere_on_the_default_kind_of_cohort(cohort, model):
    table = extract_clinical_table(cohort, risk_model=model).table
    assert table["risk"].notna().sum() > 0 and (table["risk_model"] == model).all()
    assert table.loc[table["risk"].isna(), "risk_reason"].ne("").all()
