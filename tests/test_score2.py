"""SCORE2 / SCORE2-OP: published values, model boundary, regions, units, validation, vectorised
form and the missing-metadata policies."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from clef_core import reference_population
from clef_core.score2 import (
    INPUTS,
    REGIONS,
    mgdl_to_mmol,
    risk_frame,
    risk_with_completeness,
    score2,
    score2_frame,
)


def direct_score2(age, male, sbp, tc, hdl, smoking, diabetes, region):
    """Straight transcription of the formulas and tables in reference/score2.md (no numpy)."""
    if age < 70:
        b = (
            dict(age=0.3742, smk=0.6012, sbp=0.2777, dm=0.6457, tc=0.1458, hdl=-0.2698, smk_age=-0.0755, sbp_age=-0.0255, tc_age=-0.0281, hdl_age=0.0426, dm_age=-0.0983, s0=0.9605)
            if male
            else dict(age=0.4648, smk=0.7744, sbp=0.3131, dm=0.8096, tc=0.1002, hdl=-0.2606, smk_age=-0.1088, sbp_age=-0.0277, tc_age=-0.0226, hdl_age=0.0613, dm_age=-0.1272, s0=0.9776)
        )
        cage, csbp, ctc, chdl, mean_lp = (age - 60) / 5, (sbp - 120) / 20, tc - 6, (hdl - 1.3) / 0.5, 0.0
        cal = {
            "low": ((-0.5699, 0.7476), (-0.7380, 0.7019)),
            "moderate": ((-0.1565, 0.8009), (-0.3143, 0.7701)),
            "high": ((0.3207, 0.9360), (0.5710, 0.9369)),
            "very high": ((0.5836, 0.8294), (0.9412, 0.8329)),
        }[region][0 if male else 1]
    else:
        b = (
            dict(age=0.0634, dm=0.4245, smk=0.3524, sbp=0.0094, tc=0.0850, hdl=-0.3564, dm_age=-0.0174, smk_age=-0.0247, sbp_age=-0.0005, tc_age=0.0073, hdl_age=0.0091, s0=0.7576)
            if male
            else dict(age=0.0789, dm=0.6010, smk=0.4921, sbp=0.0102, tc=0.0605, hdl=-0.3040, dm_age=-0.0107, smk_age=-0.0255, sbp_age=-0.0004, tc_age=-0.0009, hdl_age=0.0154, s0=0.8082)
        )
        cage, csbp, ctc, chdl = age - 73, sbp - 150, tc - 6, hdl - 1.4
        mean_lp = 0.0929 if male else 0.229
        cal = {
            "low": ((-0.34, 1.19), (-0.52, 1.01)),
            "moderate": ((0.01, 1.25), (-0.10, 1.10)),
            "high": ((0.08, 1.15), (0.38, 1.09)),
            "very high": ((0.05, 0.70), (0.38, 0.69)),
        }[region][0 if male else 1]
    lp = (
        b["age"] * cage + b["smk"] * smoking + b["sbp"] * csbp + b["dm"] * diabetes + b["tc"] * ctc + b["hdl"] * chdl
        + b["smk_age"] * smoking * cage + b["sbp_age"] * csbp * cage + b["tc_age"] * ctc * cage
        + b["hdl_age"] * chdl * cage + b["dm_age"] * diabetes * cage
    )
    uncalibrated = 1 - b["s0"] ** math.exp(lp - mean_lp)
    return 1 - math.exp(-math.exp(cal[0] + cal[1] * math.log(-math.log(1 - uncalibrated))))


# ------------------------------------------------------------------ published values


@pytest.mark.parametrize(
    "sex,region,expected_pct",
    [("male", "low", 5.9), ("male", "very high", 14.0), ("female", "low", 4.2), ("female", "very high", 13.7)],
)
def test_abstract_worked_examples(sex, region, expected_pct):
    # SCORE2 abstract: 50 years, smoker, SBP 140, total cholesterol 5.5, HDL 1.3.
    assert 100 * score2(50, sex, 140, 5.5, 1.3, 1, 0, region) == pytest.approx(expected_pct, abs=0.05)


# Integer percentages as published by the ESC HeartScore calculator, for the examples of the
# SCORE2 (Supplementary Table 4) and SCORE2-OP (Supplementary Table 3) papers, as used in the
# tests of the CRAN package RiskScorescvd (tests/testthat/test-SCORE2_func.R).
HEARTSCORE = [
    # region, age, sex, smoking, sbp, diabetes, tc, hdl, percent
    ("low", 50, "male", 1, 140, 0, 6.3, 1.4, 6), ("low", 50, "female", 1, 140, 0, 6.3, 1.4, 4),
    ("moderate", 50, "male", 1, 140, 0, 6.3, 1.4, 8), ("moderate", 50, "female", 1, 140, 0, 6.3, 1.4, 5),
    ("high", 50, "male", 1, 140, 0, 6.3, 1.4, 9), ("high", 50, "female", 1, 140, 0, 6.3, 1.4, 7),
    ("very high", 50, "male", 1, 140, 0, 6.3, 1.4, 15), ("very high", 50, "female", 1, 140, 0, 6.3, 1.4, 14),
    ("low", 45, "male", 0, 110, 0, 5, 2, 1), ("very high", 45, "female", 1, 140, 0, 5, 2, 6), ("high", 48, "male", 1, 160, 0, 8, 2, 10),
    # SCORE2-OP
    ("low", 75, "male", 1, 140, 0, 5.5, 1.3, 19), ("low", 75, "female", 1, 140, 0, 5.5, 1.3, 15),
    ("low", 75, "male", 0, 140, 0, 5.5, 1.3, 13), ("low", 75, "female", 0, 110, 0, 5, 2, 6),
    ("moderate", 75, "male", 1, 140, 0, 5.5, 1.3, 24), ("moderate", 75, "female", 1, 140, 0, 5.5, 1.3, 20),
    ("high", 75, "male", 1, 140, 0, 6, 1.3, 29), ("high", 75, "female", 1, 110, 0, 5, 2, 19),
    ("very high", 75, "male", 1, 140, 0, 6, 1.3, 41), ("very high", 75, "female", 1, 140, 0, 6, 1.3, 46),
]


@pytest.mark.parametrize("region,age,sex,smoking,sbp,diabetes,tc,hdl,percent", HEARTSCORE)
def test_heartscore_reference_values(region, age, sex, smoking, sbp, diabetes, tc, hdl, percent):
    assert abs(100 * score2(age, sex, sbp, tc, hdl, smoking, diabetes, region) - percent) <= 0.5


# ------------------------------------------------------------------ formula, boundary, regions

HAND = [  # age, male, sbp, tc, hdl, smoking, diabetes, region
    (55, True, 125, 4.8, 1.1, 0, 0, "moderate"),
    (62, False, 150, 6.5, 1.6, 0, 1, "high"),
    (41, False, 110, 4.2, 2.1, 1, 0, "very high"),
    (75, True, 160, 5.0, 1.0, 1, 1, "very high"),
    (84, False, 135, 6.2, 1.8, 0, 0, "low"),
    (89, True, 200, 3.0, 0.9, 0, 1, "moderate"),
]


@pytest.mark.parametrize("age,male,sbp,tc,hdl,smoking,diabetes,region", HAND)
def test_matches_a_direct_transcription(age, male, sbp, tc, hdl, smoking, diabetes, region):
    expected = direct_score2(age, male, sbp, tc, hdl, smoking, diabetes, region)
    assert score2(age, "M" if male else "f", sbp, tc, hdl, smoking, diabetes, region) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("male", [True, False])
def test_model_switches_between_69_and_70(male):
    patient = dict(sbp=140, tc=5.5, hdl=1.3, smoking=1, diabetes=0)
    sex = "male" if male else "female"
    r69 = score2(69, sex, 140, 5.5, 1.3, 1, 0)
    r70 = score2(70, sex, 140, 5.5, 1.3, 1, 0)
    assert r69 == pytest.approx(direct_score2(69, male, *patient.values(), "low"), rel=1e-12)
    assert r70 == pytest.approx(direct_score2(70, male, *patient.values(), "low"), rel=1e-12)
    # 70 is SCORE2-OP, not SCORE2 extrapolated: the two models differ at the same age.
    young_at_70 = direct_score2(69.999, male, *patient.values(), "low")
    assert abs(r70 - young_at_70) > 1e-3
    frame = score2_frame(pd.DataFrame({"age": [69, 70], "sex": sex, "sbp": 140, "total_chol": 5.5, "hdl": 1.3, "smoking": 1, "diabetes": 0}))
    assert frame["model"].tolist() == ["SCORE2", "SCORE2-OP"]


@pytest.mark.parametrize("sex", ["male", "female"])
def test_each_region_both_sexes_ordered_where_the_recalibration_is(sex):
    # The four recalibration curves are not parallel: they cross for very low risks (SCORE2)
    # and very high risks (SCORE2-OP, whose "very high" slope is 0.70). Between those, risk
    # rises with the region's risk level.
    checked = 0
    for age, smoking, sbp, tc, hdl in itertools.product(range(40, 90, 3), (0, 1), (110, 140, 170), (4.0, 6.0, 7.5), (1.0, 1.5)):
        risks = [score2(age, sex, sbp, tc, hdl, smoking, 0, region) for region in REGIONS]
        assert all(0 < r < 1 for r in risks)
        if 0.05 <= risks[0] <= 0.40:
            assert risks == sorted(risks) and len(set(risks)) == 4, (age, smoking, sbp, tc, hdl, risks)
            checked += 1
    assert checked > 100


def test_region_and_sex_spellings():
    base = score2(60, "male", 130, 5, 1.2, 0, 0, "very high")
    assert score2(60, "M", 130, 5, 1.2, 0, 0, "Very_High") == base
    assert score2(60, "MALE", 130, 5, 1.2, False, False, " very  high ") == base
    assert score2(60, "f", 130, 5, 1.2, 0, 0) == score2(60, "Female", 130, 5, 1.2, 0, 0, "LOW")


# ------------------------------------------------------------------ units and validation


def test_cholesterol_units():
    assert mgdl_to_mmol(212.685) == pytest.approx(5.5, abs=1e-4)
    assert mgdl_to_mmol(38.67) == pytest.approx(1.0)
    in_mmol = score2(50, "male", 140, mgdl_to_mmol(212.685), mgdl_to_mmol(50.271), 1, 0)
    assert in_mmol == pytest.approx(score2(50, "male", 140, 5.5, 1.3, 1, 0), abs=1e-5)
    # mg/dL passed where mmol/L is expected is caught, not scored.
    with pytest.raises(ValueError, match="total_chol"):
        score2(50, "male", 140, 212, 1.3, 1, 0)
    with pytest.raises(ValueError, match="hdl"):
        score2(50, "male", 140, 5.5, 50, 1, 0)


@pytest.mark.parametrize(
    "field,kwargs",
    [
        ("age", dict(age=39)), ("age", dict(age=90)), ("age", dict(age=float("nan"))), ("age", dict(age="50")),
        ("sex", dict(sex="x")), ("sex", dict(sex=None)),
        ("sbp", dict(sbp=-5)), ("sbp", dict(sbp=400)), ("sbp", dict(sbp=float("nan"))),
        ("total_chol", dict(total_chol=0.5)), ("total_chol", dict(total_chol=float("inf"))),
        ("hdl", dict(hdl=0.1)), ("hdl", dict(hdl=-1)),
        ("smoking", dict(smoking=2)), ("smoking", dict(smoking=0.5)), ("smoking", dict(smoking=float("nan"))), ("smoking", dict(smoking=None)),
        ("diabetes", dict(diabetes=-1)), ("diabetes", dict(diabetes="yes")),
        ("region", dict(region="mars")),
    ],
)
def test_invalid_input_names_the_field(field, kwargs):
    args = dict(age=50, sex="male", sbp=140, total_chol=5.5, hdl=1.3, smoking=1, diabetes=0, region="low") | kwargs
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        score2(**args)


# ------------------------------------------------------------------ vectorised


def _random_valid(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(40, 90, n).astype(float),
            "sex": rng.choice(["male", "female", "M", "f"], n),
            "sbp": rng.uniform(90, 200, n),
            "total_chol": rng.uniform(3, 9, n),
            "hdl": rng.uniform(0.6, 2.5, n),
            "smoking": rng.integers(0, 2, n).astype(float),
            "diabetes": rng.integers(0, 2, n),
        }
    )


@pytest.mark.parametrize("region", REGIONS)
def test_vectorised_equals_scalar(region):
    df = _random_valid(300, seed=REGIONS.index(region))
    out = score2_frame(df, region=region)
    scalar = [score2(r.age, r.sex, r.sbp, r.total_chol, r.hdl, int(r.smoking), int(r.diabetes), region) for r in df.itertuples()]
    np.testing.assert_allclose(out["risk"].to_numpy(), scalar, rtol=1e-12)
    assert (out["risk_reason"] == "").all() and (out["region"] == region).all()


def test_bad_rows_get_nan_and_a_reason_and_never_raise():
    df = pd.DataFrame(
        {
            "age": [28, 5, 50, 50, 50, 50, 91, np.nan, 60],
            "sex": ["male", "female", "x", "male", "male", "male", "female", "female", None],
            "sbp": [140, 140, 140, np.nan, 500, 140, 140, 140, "abc"],
            "total_chol": [5.5] * 9,
            "hdl": [1.3] * 9,
            "smoking": [1, 1, 1, 1, 1, 3, 1, 1, 0],
            "diabetes": [0] * 9,
        }
    )
    out = score2_frame(df)
    assert out["risk"].isna().all()
    reasons = out["risk_reason"].tolist()
    assert reasons[0] == "age 28 outside 40-89"
    assert reasons[1] == "age 5 outside 40-89"
    assert reasons[2] == "sex 'x' not male/female"
    assert reasons[3] == "sbp missing"
    assert reasons[4] == "sbp 500 mmHg outside 60-300"
    assert reasons[5] == "smoking 3 not 0/1"
    assert reasons[6] == "age 91 outside 40-89"
    assert reasons[7] == "age missing"
    assert reasons[8] == "sex missing; sbp 'abc' not a number"
    good = score2_frame(df.assign(age=50, sex="male", sbp=140, smoking=1))
    assert good["risk"].notna().all()


def test_frame_without_a_column_reports_it_missing():
    out = score2_frame(pd.DataFrame({"age": [50], "sex": ["male"], "sbp": [140], "total_chol": [5.5], "hdl": [1.3], "smoking": [1]}))
    assert np.isnan(out["risk"].iloc[0]) and out["risk_reason"].iloc[0] == "diabetes missing"


# ------------------------------------------------------------------ missing metadata


PTB_LIKE = {"age": 81, "sex": "female", "sbp": 140.0, "smoking": 0, "diabetes": 1}  # no lipids


def test_completeness_is_the_fraction_of_inputs_present():
    assert risk_with_completeness(PTB_LIKE)[1] == pytest.approx(5 / 7)
    assert risk_with_completeness({})[1] == 0.0
    full = dict(PTB_LIKE, total_chol=5.0, hdl=1.4)
    risk, rho = risk_with_completeness(full)
    assert rho == 1.0 and risk == pytest.approx(score2(81, "female", 140, 5.0, 1.4, 0, 1))
    # None, NaN and an absent key are all "missing".
    assert risk_with_completeness(dict(PTB_LIKE, total_chol=None, hdl=float("nan")))[1] == pytest.approx(5 / 7)


def test_unknown_policy_gives_nan_naming_the_missing_fields():
    risk, rho = risk_with_completeness(PTB_LIKE, policy="unknown")
    assert math.isnan(risk) and rho == pytest.approx(5 / 7)
    out = risk_frame(pd.DataFrame([PTB_LIKE]), policy="unknown")
    assert out["risk_reason"].iloc[0] == "total_chol missing; hdl missing"
    assert out["policy"].iloc[0] == "unknown" and out["imputed"].iloc[0] == ""


def test_impute_reference_fills_from_the_published_table():
    out = risk_frame(pd.DataFrame([PTB_LIKE]), policy="impute_reference", region="moderate")
    row = out.iloc[0]
    assert row["imputed"] == "total_chol,hdl" and row["policy"] == "impute_reference" and row["risk_reason"] == ""
    assert row["completeness"] == pytest.approx(5 / 7)  # imputation does not make a patient more complete
    band = dict(zip(reference_population.FIELDS, reference_population.TABLE["female"][4]))  # women 80-89
    expected = direct_score2(81, False, 140, band["total_chol"], band["hdl"], 0, 1, "moderate")
    assert row["risk"] == pytest.approx(expected, rel=1e-12)


def test_impute_reference_cannot_impute_age_or_sex():
    for missing in ("age", "sex"):
        record = {k: v for k, v in PTB_LIKE.items() if k != missing}
        risk, rho = risk_with_completeness(record, policy="impute_reference")
        assert math.isnan(risk) and rho == pytest.approx(4 / 7)
        out = risk_frame(pd.DataFrame([record]), policy="impute_reference")
        assert f"{missing} missing" in out["risk_reason"].iloc[0]


def test_impute_reference_does_not_hide_invalid_values():
    out = risk_frame(pd.DataFrame([dict(PTB_LIKE, sbp=999)]), policy="impute_reference")
    assert np.isnan(out["risk"].iloc[0]) and "sbp 999 mmHg outside 60-300" in out["risk_reason"].iloc[0]
    assert "sbp" not in out["imputed"].iloc[0]


def test_missing_is_never_read_as_zero():
    known = dict(age=55, sex="male", sbp=140, total_chol=5.5, hdl=1.3, diabetes=0)
    non_smoker = score2(55, "male", 140, 5.5, 1.3, 0, 0)
    smoker = score2(55, "male", 140, 5.5, 1.3, 1, 0)
    risk, _ = risk_with_completeness(known, policy="unknown")  # smoking missing
    assert math.isnan(risk)
    risk, _ = risk_with_completeness(dict(known, smoking=float("nan")), policy="unknown")
    assert math.isnan(risk)
    frame = risk_frame(pd.DataFrame([dict(known, smoking=np.nan)]), policy="unknown")
    assert np.isnan(frame["risk"].iloc[0]) and frame["risk_reason"].iloc[0] == "smoking missing"
    # Imputed: the reference prevalence, strictly between non-smoker and smoker, never 0.
    imputed, _ = risk_with_completeness(known, policy="impute_reference")
    assert non_smoker < imputed < smoker


def test_policy_and_region_are_validated_and_recorded():
    out = risk_frame(pd.DataFrame([PTB_LIKE]), policy="impute_reference", region="very_high")
    assert out["region"].iloc[0] == "very high" and out["policy"].iloc[0] == "impute_reference"
    with pytest.raises(ValueError, match="policy"):
        risk_frame(pd.DataFrame([PTB_LIKE]), policy="mean_of_site")
    with pytest.raises(ValueError, match="region"):
        risk_with_completeness(PTB_LIKE, region="nowhere")


def test_reference_population_is_fixed_and_complete():
    assert set(reference_population.TABLE) == {"male", "female"}
    for table in reference_population.TABLE.values():
        assert table.shape == (len(reference_population.BAND_LOW), len(reference_population.FIELDS))
        assert ((table[:, 3:] > 0) & (table[:, 3:] < 1)).all()  # prevalences
    ref = reference_population.reference_values(np.array([40, 49.9, 50, 89]), np.array([True, True, False, False]))
    assert ref["sbp"].tolist() == [
        reference_population.TABLE["male"][0][0],
        reference_population.TABLE["male"][0][0],
        reference_population.TABLE["female"][1][0],
        reference_population.TABLE["female"][4][0],
    ]
    assert set(INPUTS) - {"age", "sex"} == set(reference_population.FIELDS)
