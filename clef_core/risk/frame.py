"""Risk of every row of a clinical table under the configured model, never raising per row.

The same rules for every model (those of clef_core.score2 for SCORE2, whose results this
reproduces exactly):
  * an input is missing (NaN / None / absent column) -> risk NaN, reason "<field> missing";
  * a value that is not a number, not 0/1 for a flag, or outside its plausible physiological
    range is a data error -> NaN with the reason naming the field and value;
  * an age outside the model's range -> NaN, reason "age 28 outside 30-79" (never clipped);
  * ``impute_reference`` fills missing sbp / total_chol / hdl / smoking / diabetes from the fixed
    published reference population (clef_core.reference_population), never from the site's
    own patients; inputs it has no value for (bmi, egfr, ...) stay missing;
  * a model's ``optional`` inputs (PREVENT's HbA1c / UACR) are handled by the published model's
    own missing-value terms and are listed in ``imputed`` as "<field>:model-missing-term";
  * SCORE2-Diabetes needs ``diabetes_age`` only where diabetes is 1;
  * completeness rho = fraction of the model's inputs (required and optional) observed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from clef_core.risk.models import get_model
from clef_core.risk.settings import RiskSettings
from clef_core.score2 import PLAUSIBLE, validate_frame

FLAGS = ("smoking", "diabetes", "bp_treated", "statin")
# Plausible physiological ranges (outside: a data error, not a patient) and units.
RANGES = {
    **PLAUSIBLE,
    "bmi": (10.0, 90.0), "egfr": (1.0, 250.0), "hba1c": (3.0, 20.0), "uacr": (0.1, 30000.0), "diabetes_age": (0.0, 110.0),
}
UNITS = {"sbp": "mmHg", "total_chol": "mmol/L", "hdl": "mmol/L", "bmi": "kg/m2", "egfr": "mL/min/1.73m2",
         "hba1c": "%", "uacr": "mg/g", "diabetes_age": "y"}
ALL_INPUTS = ("age", "sex", "sbp", "total_chol", "hdl", "smoking", "diabetes", "bmi", "egfr", "bp_treated", "statin", "hba1c", "uacr", "diabetes_age")
REFERENCE_FIELDS = ("sbp", "total_chol", "hdl", "smoking", "diabetes")


def _join(why: Mapping[str, np.ndarray], names: tuple[str, ...], n: int) -> np.ndarray:
    parts = [why[name] for name in names if name in why]
    bad = np.zeros(n, dtype=bool)
    for part in parts:
        bad |= part != ""
    joined = np.full(n, "", dtype=object)
    if parts:
        joined[bad] = ["; ".join(r for r in row if r) for row in zip(*(part[bad] for part in parts))]
    return joined


def completeness(df: pd.DataFrame, settings: RiskSettings) -> pd.Series:
    """rho: fraction of the model's inputs (required and optional) present in each row."""
    model = get_model(settings.model)
    names = (*model.inputs(settings), *model.optional(settings))
    present = sum(df[name].notna().to_numpy(dtype=float) for name in names if name in df.columns)
    return pd.Series(np.zeros(len(df)) + present / len(names), index=df.index)


def risk_frame(df: pd.DataFrame, settings: RiskSettings | None = None, *, outcomes: bool = False) -> pd.DataFrame:
    """Risk and completeness of every row of ``df`` (columns named as :data:`ALL_INPUTS`;
    cholesterol mmol/L, HbA1c %, UACR mg/g) under ``settings``.

    Returns a frame on ``df.index``: ``risk`` (the configured outcome and horizon),
    ``completeness``, ``risk_reason`` ("" when defined), ``model`` (sub-model per row),
    ``imputed``, ``policy``, ``region`` and ``risk_model``; with ``outcomes`` also one column
    ``risk_<outcome>_<h>y`` per outcome and horizon the model has.
    """
    from clef_core.reference_population import reference_values

    settings = settings or RiskSettings()
    model = get_model(settings.model)
    required, optional = model.inputs(settings), model.optional(settings)
    names = (*required, *optional)
    n = len(df)
    rho = completeness(df, settings)
    clean, why = validate_frame(df, names, model.age_range, RANGES, UNITS, FLAGS)
    imputed = np.full(n, "", dtype=object)

    def note(mask: np.ndarray, text: str) -> None:
        imputed[mask] = [f"{prev},{text}" if prev else text for prev in imputed[mask]]

    if settings.missing_policy == "impute_reference":
        known = ~pd.isna(clean["sex"]) & ~np.isnan(clean["age"])
        ref = reference_values(np.nan_to_num(clean["age"]), clean["sex"] == "male")
        for name in REFERENCE_FIELDS:
            if name in required:
                fill = known & (why[name] == f"{name} missing")
                if fill.any():
                    clean[name] = np.where(fill, ref[name], clean[name])
                    why[name][fill] = ""
                    note(fill, name)
    for name in optional:
        absent = why[name] == f"{name} missing"
        why[name][absent] = ""
        note(absent & (_join(why, required, n) == ""), f"{name}:model-missing-term")
    if "diabetes_age" in required:
        not_needed = (clean["diabetes"] == 0.0) & (why["diabetes_age"] == "diabetes_age missing")
        why["diabetes_age"][not_needed] = ""
    reasons = _join(why, names, n)
    ok = reasons == ""
    primary = model.primary(settings)
    columns: dict[str, Any] = {"risk": np.full(n, np.nan)}
    label = np.full(n, "", dtype=object)
    if ok.any():
        c = {k: v[ok] for k, v in clean.items()}
        results = model.compute(c, c["sex"] == "male", settings)
        columns["risk"][ok] = results[primary]
        label[ok] = model.label(c, settings)
        if outcomes:
            for (outcome, horizon), values in results.items():
                col = np.full(n, np.nan)
                col[ok] = values
                columns[f"risk_{outcome}_{horizon}y"] = col
    out = pd.DataFrame({"risk": columns.pop("risk"), "completeness": rho.to_numpy(), "risk_reason": reasons, "model": label,
                        "imputed": imputed, "policy": settings.missing_policy,
                        "region": settings.region if settings.model in ("score2", "score2_diabetes") else "",
                        "risk_model": settings.model, **columns}, index=df.index)
    return out


def person_frame(values: Mapping[str, Any]) -> pd.DataFrame:
    """A one-row frame from a mapping of input values (absent keys are missing)."""
    return pd.DataFrame([{name: values.get(name, None if name == "sex" else np.nan) for name in ALL_INPUTS}])
