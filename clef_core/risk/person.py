"""One person's risk from ``key=value`` inputs (the `clef risk` command): strict, one error line.

Keys: age, sex, sbp, total_chol (or tc), hdl, chol_unit (mmol/L | mg/dL, default mmol/L),
smoking (or smoker), diabetes, bp_treated, statin, egfr, bmi, hba1c, hba1c_unit (% | mmol/mol,
default %), uacr (mg/g), diabetes_age; model options region (SCORE2, SCORE2-Diabetes), variant
(PREVENT: base | hba1c | uacr, default: from the inputs given), race (PCE: white |
african_american; the race term is used only when given here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from clef_core.risk.frame import ALL_INPUTS, FLAGS, person_frame, risk_frame
from clef_core.risk.models import get_model
from clef_core.risk.settings import RiskSettings
from clef_core.score2 import MG_DL_PER_MMOL_L

ALIASES = {"tc": "total_chol", "chol": "total_chol", "smoker": "smoking", "antihypertensive": "bp_treated"}
OPTIONS = ("chol_unit", "hba1c_unit", "region", "variant", "race")
_TRUE, _FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n")


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {text!r}")
    return value


def parse_inputs(pairs: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(inputs in the project's units, options) from raw key -> text pairs; ValueError naming a
    bad key or value."""
    values: dict[str, Any] = {}
    options: dict[str, str] = {}
    for key, text in pairs.items():
        name = ALIASES.get(key, key)
        if name in OPTIONS:
            options[name] = text
        elif name == "sex":
            values[name] = text
        elif name in FLAGS:
            low = text.strip().lower()
            low = {"0.0": "0", "1.0": "1"}.get(low, low)
            if low not in _TRUE + _FALSE:
                raise ValueError(f"{key}: expected 0/1 (or true/false), got {text!r}")
            values[name] = 1.0 if low in _TRUE else 0.0
        elif name in ALL_INPUTS:
            values[name] = _number(key, text)
        else:
            raise ValueError(f"unknown input {key!r}; known: {', '.join((*ALL_INPUTS, *ALIASES, *OPTIONS))}")
    unit = options.get("chol_unit", "mmol/L").strip().lower()
    if unit not in ("mmol/l", "mg/dl"):
        raise ValueError(f"chol_unit: expected mmol/L or mg/dL, got {options['chol_unit']!r}")
    if unit == "mg/dl":
        for name in ("total_chol", "hdl"):
            if name in values:
                values[name] = values[name] / MG_DL_PER_MMOL_L
    a1c_unit = options.get("hba1c_unit", "%").strip().lower()
    if a1c_unit not in ("%", "mmol/mol"):
        raise ValueError(f"hba1c_unit: expected % or mmol/mol, got {options['hba1c_unit']!r}")
    if a1c_unit == "mmol/mol" and "hba1c" in values:
        values["hba1c"] = values["hba1c"] / 10.929 + 2.15
    return values, options


def settings_for(model: str, values: Mapping[str, Any], options: Mapping[str, str]) -> RiskSettings:
    get_model(model)
    kwargs: dict[str, Any] = {"model": model}
    if "region" in options:
        kwargs["region"] = options["region"]
    if "race" in options:
        kwargs["pce_race"] = options["race"]
    if model == "prevent":
        given = [v for v in ("hba1c", "uacr") if v in values]
        if "variant" in options:
            kwargs["prevent_variant"] = options["variant"]
        elif len(given) > 1:
            raise ValueError("variant: both hba1c and uacr given; choose variant=hba1c or variant=uacr "
                             "(PREVENT's full model also needs the social deprivation index, not supported)")
        else:
            kwargs["prevent_variant"] = given[0] if given else "base"
    return RiskSettings(**kwargs)


def risk_of_person(model: str, pairs: Mapping[str, str]) -> dict[str, Any]:
    """The JSON-ready result for one person: every outcome / horizon of ``model``.
    ValueError (naming the input) for an unknown, missing, invalid or out-of-range input."""
    values, options = parse_inputs(pairs)
    settings = settings_for(model, values, options)
    spec = get_model(model)
    needed = spec.inputs(settings)
    missing = [n for n in needed if n not in values and not (n == "diabetes_age" and values.get("diabetes") == 0.0)]
    if missing:
        raise ValueError(f"missing input(s) {', '.join(missing)}: {spec.title} needs {', '.join(needed)}")
    row = risk_frame(person_frame(values), settings, outcomes=True).iloc[0]
    if row["risk_reason"]:
        raise ValueError(row["risk_reason"])
    risk: dict[str, dict[str, float]] = {}
    for column, value in row.items():
        if str(column).startswith("risk_") and column not in ("risk_reason", "risk_model"):
            outcome, horizon = str(column)[len("risk_"):].rsplit("_", 1)
            risk.setdefault(horizon, {})[outcome] = round(float(value), 6)
    result: dict[str, Any] = {"model": model, "title": spec.title, "submodel": row["model"], "risk": risk,
                              "settings": settings.describe()}
    if model == "prevent":
        result["variant"] = settings.prevent_variant
    if row["imputed"]:
        result["note"] = f"handled by the model's missing-value terms: {row['imputed']}"
    result["inputs"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in values.items()}
    result["units"] = "cholesterol mmol/L, sbp mmHg, bmi kg/m2, egfr mL/min/1.73m2, hba1c %, uacr mg/g; risk as a fraction"
    return result
