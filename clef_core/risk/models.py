"""The four clinical risk models behind one interface: inputs, age range, outcomes, formula.

A :class:`RiskModel` says which inputs its formula reads (``inputs``; ``optional`` ones the
published model itself handles when unknown, e.g. PREVENT's missing-HbA1c term), where it is
defined (``age_range``), and computes every outcome / horizon it has from clean arrays
(:meth:`RiskModel.compute`). :mod:`clef_core.risk.frame` adds validation, the missing-metadata
policies and completeness, the same for every model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from clef_core.risk import pce, prevent, score2_diabetes
from clef_core.risk.settings import RiskSettings
from clef_core.score2 import AGE_RANGE as SCORE2_AGE_RANGE
from clef_core.score2 import INPUTS as SCORE2_INPUTS
from clef_core.score2 import MG_DL_PER_MMOL_L, OP_FROM_AGE, score2_core

Arrays = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class RiskModel:
    """``compute(x, male, settings)`` -> {(outcome, horizon_years): risk array}; ``label(x,
    settings)`` -> the sub-model used per row (e.g. "SCORE2-OP")."""

    name: str
    title: str
    inputs: Callable[[RiskSettings], tuple[str, ...]]
    optional: Callable[[RiskSettings], tuple[str, ...]]
    age_range: tuple[float, float]
    compute: Callable[[Arrays, np.ndarray, RiskSettings], dict[tuple[str, int], np.ndarray]]
    label: Callable[[Arrays, RiskSettings], np.ndarray]
    primary: Callable[[RiskSettings], tuple[str, int]]


def _const(value):
    return lambda settings: value


def _score2(x: Arrays, male: np.ndarray, s: RiskSettings) -> dict[tuple[str, int], np.ndarray]:
    return {("cvd", 10): score2_core(x["age"], male, x["sbp"], x["total_chol"], x["hdl"], x["smoking"], x["diabetes"], s.region)}


def _score2_label(x: Arrays, s: RiskSettings) -> np.ndarray:
    return np.where(x["age"] < OP_FROM_AGE, "SCORE2", "SCORE2-OP").astype(object)


def _prevent_inputs(s: RiskSettings) -> tuple[str, ...]:
    return (*SCORE2_INPUTS, "bmi", "egfr", "bp_treated", "statin")


def _prevent_optional(s: RiskSettings) -> tuple[str, ...]:
    return {"base": (), "hba1c": ("hba1c",), "uacr": ("uacr",)}[s.prevent_variant]


def _prevent(x: Arrays, male: np.ndarray, s: RiskSettings) -> dict[tuple[str, int], np.ndarray]:
    full = {k: np.asarray(x.get(k, np.full(len(male), np.nan)), dtype=float) for k in (*_prevent_inputs(s), "hba1c", "uacr") if k != "sex"}
    out = {}
    for horizon in prevent.HORIZONS:
        for outcome, risk in prevent.prevent_core(full, male, horizon, s.prevent_variant).items():
            out[(outcome, horizon)] = risk
    return out


def _pce(x: Arrays, male: np.ndarray, s: RiskSettings) -> dict[tuple[str, int], np.ndarray]:
    mg = MG_DL_PER_MMOL_L  # mmol/L -> mg/dL, the inverse of the project's conversion
    risk = pce.pce_core(x["age"], male, x["sbp"], x["total_chol"] * mg, x["hdl"] * mg, x["bp_treated"], x["smoking"], x["diabetes"], s.pce_race)
    return {("ascvd", 10): risk}


def _score2_diabetes(x: Arrays, male: np.ndarray, s: RiskSettings) -> dict[tuple[str, int], np.ndarray]:
    risk = score2_diabetes.score2_diabetes_core(x["age"], male, x["sbp"], x["total_chol"], x["hdl"], x["smoking"], x["diabetes"],
                                                x["diabetes_age"], x["hba1c"], x["egfr"], s.region)
    return {("cvd", 10): risk}


def _fixed_label(text: Callable[[RiskSettings], str]):
    return lambda x, s: np.full(len(x["age"]), text(s), dtype=object)


MODELS: dict[str, RiskModel] = {
    "score2": RiskModel(
        "score2", "SCORE2 / SCORE2-OP (ESC 2021)", _const(SCORE2_INPUTS), _const(()), SCORE2_AGE_RANGE,
        _score2, _score2_label, _const(("cvd", 10)),
    ),
    "prevent": RiskModel(
        "prevent", "PREVENT (AHA 2023)", _prevent_inputs, _prevent_optional, prevent.AGE_RANGE,
        _prevent, _fixed_label(lambda s: f"PREVENT-{s.prevent_variant}"), lambda s: (s.prevent_outcome, s.prevent_horizon),
    ),
    "pce": RiskModel(
        "pce", "Pooled Cohort Equations (ACC/AHA 2013)", _const(("age", "sex", "sbp", "total_chol", "hdl", "smoking", "diabetes", "bp_treated")),
        _const(()), pce.AGE_RANGE, _pce, _fixed_label(lambda s: f"PCE-{s.pce_race}"), _const(("ascvd", 10)),
    ),
    "score2_diabetes": RiskModel(
        "score2_diabetes", "SCORE2-Diabetes (ESC 2023)", _const((*SCORE2_INPUTS, "hba1c", "egfr", "diabetes_age")), _const(()),
        score2_diabetes.AGE_RANGE, _score2_diabetes, _fixed_label(lambda s: "SCORE2-Diabetes"), _const(("cvd", 10)),
    ),
}


def get_model(name: str) -> RiskModel:
    if name not in MODELS:
        raise ValueError(f"risk.model: unknown model {name!r}; expected one of {tuple(MODELS)}")
    return MODELS[name]
