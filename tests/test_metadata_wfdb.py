"""Clinical metadata from WFDB header comments: the real records in ../shared/data and
hand-written headers with bad values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from clef_core.metadata import MetadataConfig, extract_clinical_table
from clef_core.metadata.wfdb_headers import parse_comments


def by_id(ct):
    return ct.table.set_index("record_id")


def test_cinc_headers(shared_data):
    ct = extract_clinical_table(shared_data / "ecg")
    t = by_id(ct)
    assert len(t) == 25 and ct.settings["kind"] == "wfdb" and len(ct.problems) == 0
    hr = t.loc["HR06000"]
    assert hr["age"] == 59 and hr["sex"] == "female" and hr["subject_id"] == "HR06000"
    assert hr["dx"] == "164934002,426783006"
    assert hr["src_age"] == "header Age" and hr["completeness"] == pytest.approx(2 / 7)
    assert (t["dx"] != "").all()
    # Only age and sex are known: risk NaN naming what is missing; children / young adults say why.
    assert t["risk"].isna().all()
    assert t.loc["JS20008", "age"] == 5 and t.loc["JS20008", "risk_reason"].startswith("age 5 outside 40-89")
    assert t.loc["HR06004", "age"] == 28 and t.loc["HR06004", "risk_reason"].startswith("age 28 outside 40-89")
    assert t.loc["HR06000", "risk_reason"] == "sbp missing; total_chol missing; hdl missing; smoking missing; diabetes missing"
    for field in ("sbp", "total_chol", "hdl", "smoking", "diabetes"):
        assert t[field].isna().all(), field  # never 0


def test_ptb_free_text(shared_data):
    ct = extract_clinical_table(shared_data / "wfdb")
    r = by_id(ct).loc["s0010_re"]
    assert (r["age"], r["sex"], r["sbp"], r["smoking"], r["diabetes"]) == (81, "female", 140, 0, 1)
    assert math.isnan(r["total_chol"]) and math.isnan(r["hdl"])
    assert r["completeness"] == pytest.approx(5 / 7)
    assert math.isnan(r["risk"]) and r["risk_reason"] == "total_chol missing; hdl missing"
    assert r["src_sbp"].startswith("header Peripheral blood Pressure") and r["src_diabetes"] == "header Additional diagnoses"
    assert str(r["ecg_time"].date()) == "1990-10-01"  # "ECG date: 01/10/1990", day first
    imputed = by_id(extract_clinical_table(shared_data / "wfdb", policy="impute_reference")).loc["s0010_re"]
    assert 0 < imputed["risk"] < 1 and imputed["model"] == "SCORE2-OP" and imputed["imputed"] == "total_chol,hdl"


def test_every_shared_record(shared_data):
    ct = extract_clinical_table(shared_data)  # ecg/, wfdb/, mitdb/, noise/ together
    t = by_id(ct)
    assert len(t) == 25 + 1 + 22 + 2 and len(ct.problems) == 0
    mit = t[t.index.str.startswith("mitdb/")]
    assert mit["age"].notna().all() and mit["sex"].notna().all()
    assert (t.loc["mitdb/101", "age"], t.loc["mitdb/101", "sex"]) == (75, "female")
    assert (t.loc["mitdb/109", "age"], t.loc["mitdb/109", "sex"]) == (64, "male")
    assert t.loc["noise/bw", "completeness"] == 0 and math.isnan(t.loc["noise/bw", "risk"])
    assert t.loc["ecg/HR06000", "age"] == 59


HEADER = "{name} 1 500 5000\n{name}.dat 16 200 16 0 0 0 0 I\n"


def write_header(folder: Path, name: str, comments: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.hea").write_text(HEADER.format(name=name) + "".join(f"# {c}\n" for c in comments))


def test_bad_values_are_reported_and_missing(tmp_path):
    write_header(tmp_path / "site", "bad", ["Age: abc", "Sex: X", "Peripheral blood Pressure (syst/diast): 400/80 mmHg", "Smoker: sometimes"])
    write_header(tmp_path / "site", "old", ["Age: 150", "Sex: M", "Blood pressure: 120/80"])
    write_header(tmp_path / "site" / "sub", "unknowns", ["Age: Unknown", "Sex: Unknown", "Smoker: n/a", "Dx: Unknown"])
    (tmp_path / "site" / "broken.hea").write_text("this is not a header\n")
    ct = extract_clinical_table(tmp_path / "site", kind="wfdb")
    t = by_id(ct)
    assert sorted(t.index) == ["bad", "broken", "old", "sub/unknowns"]
    p = ct.problems.set_index(["record_id", "field"])
    assert p.loc[("bad", "age"), "raw_value"] == "abc"
    assert p.loc[("bad", "sex"), "raw_value"] == "X"
    assert p.loc[("bad", "sbp"), "raw_value"].startswith("400/80")
    assert p.loc[("bad", "smoking"), "raw_value"] == "sometimes"
    assert p.loc[("old", "age"), "raw_value"] == "150"
    assert "unreadable header" in p.loc[("broken", "header"), "message"]
    assert ("sub/unknowns", "age") not in p.index  # "Unknown" is missing, not a problem
    for rec in ("bad", "broken", "sub/unknowns"):
        assert t.loc[rec, "completeness"] == 0 and math.isnan(t.loc[rec, "risk"])
    assert math.isnan(t.loc["old", "age"]) and t.loc["old", "sex"] == "male" and t.loc["old", "sbp"] == 120


def test_comment_parsing_rules():
    settings = MetadataConfig()
    rec = parse_comments("r", ["Age: 55", "Sex: Male", "Smoker: yes", "Total cholesterol: 232 mg/dL", "HDL: 1.1 mmol/L",
                               "Pulmonary artery pressure (at rest) (syst/diast): 40/20 mmHg", "Additional diagnoses: Hypertension"], settings)
    v = rec.values
    assert v["age"] == 55 and v["sex"] == "male" and v["smoking"] == 1
    assert v["total_chol"] == pytest.approx(232 / 38.67) and v["hdl"] == pytest.approx(1.1)
    assert "sbp" not in v  # a pulmonary pressure is not the arterial SBP
    assert v["diabetes"] == 0 and v["src_diabetes"] == "header diagnoses without diabetes"
    strict = parse_comments("r", ["Additional diagnoses: Hypertension"], MetadataConfig(absent_code_is_negative=False)).values
    assert "diabetes" not in strict
    assert parse_comments("r", ["Reason for admission: Diabetes mellitus type 2"], settings).values["diabetes"] == 1
    mit = parse_comments("r", ["69 M 1085 1629 x1", "Digoxin"], settings).values
    assert mit["age"] == 69 and mit["sex"] == "male"
    assert "age" not in parse_comments("r", ["? F 1085 1629 x1"], settings).values
