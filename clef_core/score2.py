"""SCORE2 / SCORE2-OP 10-year cardiovascular risk, scalar and vectorised, with missing metadata.

Source: SCORE2 working group and ESC Cardiovascular risk collaboration, "SCORE2 risk prediction
algorithms: new models to estimate 10-year risk of cardiovascular disease in Europe", Eur Heart J
2021;42:2439-54, and SCORE2-OP working group, "SCORE2-OP risk prediction algorithms", Eur Heart J
2021;42:2455-67 (constants as in the team note reference/score2.md, cross-checked with the
authors' Stata programs and the CRAN package RiskScorescvd).

Model by age: SCORE2 for 40-69, SCORE2-OP for 70-89; outside 40-89 the score is undefined.

  SCORE2:    cage=(age-60)/5, csbp=(sbp-120)/20, ctc=tc-6, chdl=(hdl-1.3)/0.5
             p0 = 1 - S0 ** exp(LP)
  SCORE2-OP: cage=age-73,     csbp=sbp-150,      ctc=tc-6, chdl=hdl-1.4
             p0 = 1 - S0 ** exp(LP - meanLP)
  LP = b . (cage, smoking, csbp, diabetes, ctc, chdl, smoking*cage, csbp*cage, ctc*cage,
            chdl*cage, diabetes*cage)
  region recalibration: risk = 1 - exp(-exp(scale1 + scale2 * ln(-ln(1 - p0))))

Units: age years, SBP mmHg, total cholesterol and HDL mmol/L (mg/dL / 38.67), smoking = current
smoker 0/1, diabetes 0/1.

One formula (:func:`score2_core`) serves every entry point: :func:`score2` validates one patient
strictly (``ValueError`` naming the field) and calls it on arrays of length one;
:func:`score2_frame` validates a whole cohort without raising (an undefined row gets risk NaN and
a ``risk_reason``); :func:`risk_frame` / :func:`risk_with_completeness` add the completeness
rho (fraction of the seven inputs present) and the missing-metadata policy:

  ``unknown``           any missing input -> risk NaN, the reason names the missing fields;
  ``impute_reference``  missing sbp / total_chol / hdl / smoking / diabetes are filled from the
                        fixed published reference population of
                        :mod:`clef_core.reference_population` (never from the site's own
                        patients); age and sex cannot be imputed. A missing value is never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

REGIONS = ("low", "moderate", "high", "very high")
POLICIES = ("unknown", "impute_reference")
INPUTS = ("age", "sex", "sbp", "total_chol", "hdl", "smoking", "diabetes")
IMPUTABLE = ("sbp", "total_chol", "hdl", "smoking", "diabetes")
MG_DL_PER_MMOL_L = 38.67  # cholesterol: mmol/L = mg/dL / 38.67

AGE_RANGE = (40.0, 89.0)  # where SCORE2 / SCORE2-OP are defined
OP_FROM_AGE = 70.0
# Plausible physiological ranges: outside them a value is a data error, not a patient.
PLAUSIBLE = {"sbp": (60.0, 300.0), "total_chol": (1.0, 20.0), "hdl": (0.2, 5.0)}
UNITS = {"age": "y", "sbp": "mmHg", "total_chol": "mmol/L", "hdl": "mmol/L"}

# term order: cage, smoking, csbp, diabetes, ctchol, chdl, smoking*cage, csbp*cage,
#             ctchol*cage, chdl*cage, diabetes*cage
_SCORE2 = {  # sex -> (coefficients, S0 at 10 years)
    "male": ((0.3742, 0.6012, 0.2777, 0.6457, 0.1458, -0.2698, -0.0755, -0.0255, -0.0281, 0.0426, -0.0983), 0.9605),
    "female": ((0.4648, 0.7744, 0.3131, 0.8096, 0.1002, -0.2606, -0.1088, -0.0277, -0.0226, 0.0613, -0.1272), 0.9776),
}
_SCORE2_OP = {  # sex -> (coefficients, S0 at 10 years, mean LP)
    "male": ((0.0634, 0.3524, 0.0094, 0.4245, 0.0850, -0.3564, -0.0247, -0.0005, 0.0073, 0.0091, -0.0174), 0.7576, 0.0929),
    "female": ((0.0789, 0.4921, 0.0102, 0.6010, 0.0605, -0.3040, -0.0255, -0.0004, -0.0009, 0.0154, -0.0107), 0.8082, 0.229),
}
_RECALIBRATION = {  # model -> region -> sex -> (scale1, scale2)
    "SCORE2": {
        "low": {"male": (-0.5699, 0.7476), "female": (-0.7380, 0.7019)},
        "moderate": {"male": (-0.1565, 0.8009), "female": (-0.3143, 0.7701)},
        "high": {"male": (0.3207, 0.9360), "female": (0.5710, 0.9369)},
        "very high": {"male": (0.5836, 0.8294), "female": (0.9412, 0.8329)},
    },
    "SCORE2-OP": {
        "low": {"male": (-0.34, 1.19), "female": (-0.52, 1.01)},
        "moderate": {"male": (0.01, 1.25), "female": (-0.10, 1.10)},
        "high": {"male": (0.08, 1.15), "female": (0.38, 1.09)},
        "very high": {"male": (0.05, 0.70), "female": (0.38, 0.69)},
    },
}
_SEX_WORDS = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female"}


def mgdl_to_mmol(mg_dl: Any) -> Any:
    """Cholesterol (total or HDL) mg/dL -> mmol/L."""
    return mg_dl / MG_DL_PER_MMOL_L


def normalize_region(region: str) -> str:
    """"low" | "moderate" | "high" | "very high" (also "very_high", any case); else ValueError."""
    key = str(region).strip().lower().replace("_", " ").replace("-", " ")
    key = " ".join(key.split())
    if key not in REGIONS:
        raise ValueError(f"region: unknown SCORE2 region {region!r}; expected one of {REGIONS}")
    return key


def normalize_policy(policy: str) -> str:
    key = str(policy).strip().lower()
    if key not in POLICIES:
        raise ValueError(f"policy: unknown missing-metadata policy {policy!r}; expected one of {POLICIES}")
    return key


def normalize_sex(values: Any) -> pd.Series:
    """Vectorised: "male"/"female"/"M"/"F"/... (any case) -> "male"/"female"; anything else None."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    words = np.array([_SEX_WORDS.get(str(u).strip().lower()) for u in uniques] + [None], dtype=object)
    return pd.Series(words[codes], dtype=object)  # code -1 (NA) picks the trailing None


def score2_core(age, male, sbp, total_chol, hdl, smoking, diabetes, region: str) -> np.ndarray:
    """The formula itself, on arrays (no validation): risk fraction, NaN outside ages 40-89.

    ``male`` is boolean; smoking / diabetes may be fractional (a prevalence, when imputed).
    """
    region = normalize_region(region)
    age, sbp, tc, hdl, smoking, diabetes, male = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (age, sbp, total_chol, hdl, smoking, diabetes)), np.asarray(male, dtype=bool)
    )
    out = np.full(age.shape, np.nan)
    young = (age >= AGE_RANGE[0]) & (age < OP_FROM_AGE)
    old = (age >= OP_FROM_AGE) & (age <= AGE_RANGE[1])
    for sex, is_sex in (("male", male), ("female", ~male)):
        for model, in_model in (("SCORE2", young), ("SCORE2-OP", old)):
            sel = in_model & is_sex
            if not sel.any():
                continue
            a, s, b, t, h, d = age[sel], smoking[sel], sbp[sel], tc[sel], hdl[sel], diabetes[sel]
            if model == "SCORE2":
                coef, s0 = _SCORE2[sex]
                cage, csbp, ctc, chdl, mean_lp = (a - 60) / 5, (b - 120) / 20, t - 6, (h - 1.3) / 0.5, 0.0
            else:
                coef, s0, mean_lp = _SCORE2_OP[sex]
                cage, csbp, ctc, chdl = a - 73, b - 150, t - 6, h - 1.4
            terms = np.stack([cage, s, csbp, d, ctc, chdl, s * cage, csbp * cage, ctc * cage, chdl * cage, d * cage], axis=-1)
            uncalibrated = 1.0 - s0 ** np.exp(terms @ np.asarray(coef) - mean_lp)
            scale1, scale2 = _RECALIBRATION[model][region][sex]
            out[sel] = 1.0 - np.exp(-np.exp(scale1 + scale2 * np.log(-np.log(1.0 - uncalibrated))))
    return out


def model_for_age(age: float) -> str:
    """"SCORE2" (40-69), "SCORE2-OP" (70-89); ValueError outside."""
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        raise ValueError(f"age: {age:g} outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} (SCORE2/SCORE2-OP undefined)")
    return "SCORE2" if age < OP_FROM_AGE else "SCORE2-OP"


def _number(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.number)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    x = float(value)
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"{name}: missing (NaN/inf)")
    return x


def _flag(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    x = _number(name, value)
    if x not in (0.0, 1.0):
        raise ValueError(f"{name}: must be 0/1 or bool, got {value!r}")
    return x


def score2(age: float, sex: str, sbp: float, total_chol: float, hdl: float, smoking: int | bool, diabetes: int | bool, region: str = "low") -> float:
    """10-year risk of fatal and non-fatal CVD (fraction) of one patient.

    age years (40-89; SCORE2 below 70, SCORE2-OP from 70), sex "male"/"female"/"M"/"F" (any
    case), sbp mmHg (60-300), total_chol and hdl mmol/L (1-20 and 0.2-5), smoking / diabetes
    0/1 or bool, region "low" | "moderate" | "high" | "very high". Invalid or undefined input
    raises ``ValueError`` naming the field.
    """
    region = normalize_region(region)
    a = _number("age", age)
    model_for_age(a)
    if not isinstance(sex, str) or sex.strip().lower() not in _SEX_WORDS:
        raise ValueError(f"sex: expected 'male'/'female' (or 'M'/'F'), got {sex!r}")
    values = {"sbp": sbp, "total_chol": total_chol, "hdl": hdl}
    checked = {}
    for name, value in values.items():
        x = _number(name, value)
        lo, hi = PLAUSIBLE[name]
        if not lo <= x <= hi:
            raise ValueError(f"{name}: {x:g} {UNITS[name]} outside the plausible range {lo:g}-{hi:g}")
        checked[name] = x
    s, d = _flag("smoking", smoking), _flag("diabetes", diabetes)
    male = _SEX_WORDS[sex.strip().lower()] == "male"
    return float(score2_core([a], [male], [checked["sbp"]], [checked["total_chol"]], [checked["hdl"]], [s], [d], region)[0])


# ---------------------------------------------------------------- vectorised, never raising per row


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (float, int, np.number)) and not isinstance(v, (bool, np.bool_)) else repr(v)


def _set(reason: np.ndarray, mask: np.ndarray, prefix: str, values: np.ndarray, suffix: str) -> None:
    """Write ``prefix + value + suffix`` into ``reason`` on the rows of ``mask`` (formats only those)."""
    if mask.any():
        reason[mask] = [f"{prefix}{_fmt(v)}{suffix}" for v in values[mask]]


def join_reasons(why: Mapping[str, np.ndarray]) -> np.ndarray:
    """One "; "-joined reason per row from per-field reason arrays ("" = no problem)."""
    parts = [why[name] for name in INPUTS if name in why]
    n = len(parts[0]) if parts else 0
    bad = np.zeros(n, dtype=bool)
    for part in parts:
        bad |= part != ""
    joined = np.full(n, "", dtype=object)
    joined[bad] = ["; ".join(r for r in row if r) for row in zip(*(part[bad] for part in parts))]
    return joined


def _column(df: pd.DataFrame, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw values, float values with NaN for missing / unparsable / inf) of one input column."""
    if name not in df.columns:
        return np.full(n, np.nan), np.full(n, np.nan)
    col = df[name]
    if name != "sex" and (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
        num = col.to_numpy(dtype=float, na_value=np.nan, copy=True)
        raw = num.copy()
    else:
        raw = col.to_numpy(dtype=object)
        if name == "sex":
            return raw, np.full(n, np.nan)
        num = pd.to_numeric(pd.Series(raw, dtype=object).where(~pd.isna(raw), np.nan), errors="coerce")
        num = num.to_numpy(dtype=float, na_value=np.nan, copy=True)
    num[np.isinf(num)] = np.nan
    return raw, num


def validate_frame(
    df: pd.DataFrame,
    names: tuple[str, ...] = INPUTS,
    age_range: tuple[float, float] = AGE_RANGE,
    ranges: Mapping[str, tuple[float, float]] = PLAUSIBLE,
    units: Mapping[str, str] = UNITS,
    flags: tuple[str, ...] = ("smoking", "diabetes"),
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Coerce the inputs ``names`` of ``df`` (default: the seven SCORE2 inputs) and say, per
    field, what makes a row undefined: a missing value, sex not male/female, a ``flags`` field
    not 0/1, age outside ``age_range`` or another field outside its plausible ``ranges``.
    The other risk models (clef_core.risk.frame) validate their inputs with this too.

    Returns (clean, why), both keyed by input name: ``clean`` holds float arrays (``sex``: an
    object array of "male"/"female"/None), invalid values set to NaN/None; ``why`` holds object
    arrays of reasons ("" when fine, else e.g. "age 28 outside 40-89", "sbp missing");
    :func:`join_reasons` turns them into one reason per row.
    """
    n = len(df)
    clean: dict[str, np.ndarray] = {}
    why: dict[str, np.ndarray] = {}
    for name in names:
        raw, num = _column(df, name, n)
        missing = pd.isna(raw)
        reason = np.full(n, "", dtype=object)
        reason[missing] = f"{name} missing"
        if name == "sex":
            sex = normalize_sex(raw).to_numpy()
            _set(reason, ~missing & pd.isna(sex), "sex ", raw, " not male/female")
            clean[name], why[name] = sex, reason
            continue
        _set(reason, ~missing & np.isnan(num), f"{name} ", raw, " not a number")
        if name in flags:
            bad = ~np.isnan(num) & (num != 0.0) & (num != 1.0)
            _set(reason, bad, f"{name} ", num, " not 0/1")
        else:
            lo, hi = age_range if name == "age" else ranges[name]
            bad = ~np.isnan(num) & ((num < lo) | (num > hi))
            unit = "" if name == "age" else f" {units[name]}"
            _set(reason, bad, f"{name} ", num, f"{unit} outside {lo:g}-{hi:g}")
        num[bad] = np.nan
        clean[name], why[name] = num, reason
    return clean, why


def score2_frame(df: pd.DataFrame, region: str = "low") -> pd.DataFrame:
    """SCORE2 / SCORE2-OP for every row of ``df`` (columns age, sex, sbp, total_chol, hdl,
    smoking, diabetes; units as :func:`score2`). Never raises for a row: an undefined row gets
    risk NaN and a ``risk_reason``. Returns a frame on ``df.index`` with columns
    ``risk`` (fraction), ``risk_reason`` ("" when defined), ``model`` ("SCORE2" / "SCORE2-OP" / "")
    and ``region``."""
    region = normalize_region(region)
    clean, why = validate_frame(df)
    return _score_clean(clean, join_reasons(why), region, df.index)


def _score_clean(clean: Mapping[str, np.ndarray], reasons: np.ndarray, region: str, index: pd.Index) -> pd.DataFrame:
    ok = reasons == ""
    risk = np.full(len(reasons), np.nan)
    if ok.any():
        c = {name: values[ok] for name, values in clean.items()}
        risk[ok] = score2_core(c["age"], c["sex"] == "male", c["sbp"], c["total_chol"], c["hdl"], c["smoking"], c["diabetes"], region)
    model = np.full(len(reasons), "", dtype=object)
    model[ok & (clean["age"] < OP_FROM_AGE)] = "SCORE2"
    model[ok & (clean["age"] >= OP_FROM_AGE)] = "SCORE2-OP"
    return pd.DataFrame({"risk": risk, "risk_reason": reasons, "model": model, "region": region}, index=index)


# ---------------------------------------------------------------- missing metadata


def completeness(df: pd.DataFrame) -> pd.Series:
    """rho: fraction of the seven SCORE2 inputs present (not NaN / None) in each row."""
    present = sum(df[name].notna().to_numpy(dtype=float) for name in INPUTS if name in df.columns)
    return pd.Series(np.zeros(len(df)) + present / len(INPUTS), index=df.index)


def risk_frame(df: pd.DataFrame, policy: str = "unknown", region: str = "low") -> pd.DataFrame:
    """Risk and completeness of every row under a missing-metadata policy (see module doc).

    Returns a frame on ``df.index``: ``risk``, ``completeness``, ``risk_reason``, ``model``,
    ``imputed`` (comma-separated fields filled from the reference population, "" if none),
    ``policy``, ``region``. Completeness counts observed inputs only: imputation does not raise it.
    """
    from clef_core.reference_population import reference_values

    policy, region = normalize_policy(policy), normalize_region(region)
    rho = completeness(df)
    clean, why = validate_frame(df)
    imputed = np.full(len(df), "", dtype=object)
    if policy == "impute_reference":
        # Only an absent value is imputed (an invalid one stays an error), and only when age
        # and sex are known: the reference values are age- and sex-specific.
        known = ~pd.isna(clean["sex"]) & ~np.isnan(clean["age"])
        ref = reference_values(np.nan_to_num(clean["age"]), clean["sex"] == "male")
        for name in IMPUTABLE:
            fill = known & (why[name] == f"{name} missing")
            if fill.any():
                clean[name] = np.where(fill, ref[name], clean[name])
                why[name][fill] = ""
                imputed[fill] = [f"{prev},{name}" if prev else name for prev in imputed[fill]]
    out = _score_clean(clean, join_reasons(why), region, df.index)
    out.insert(1, "completeness", rho.to_numpy())
    out["imputed"] = imputed
    out["policy"] = policy
    return out


def risk_with_completeness(record: Mapping[str, Any], policy: str = "unknown", region: str = "low") -> tuple[float, float]:
    """(risk, completeness) of one patient record whose fields may be missing (absent key,
    None or NaN). ``risk`` is NaN when undefined under ``policy``; it never raises for a
    missing or undefined value (use :func:`risk_frame` for the reason)."""
    row = pd.DataFrame([{name: record.get(name, None) for name in INPUTS}], dtype=object)
    for name in INPUTS:
        if name != "sex":
            row[name] = row[name].where(row[name].notna(), np.nan)
    out = risk_frame(row, policy=policy, region=region)
    return float(out["risk"].iloc[0]), float(out["completeness"].iloc[0])
