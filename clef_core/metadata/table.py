"""The clinical table (one row per ECG record), its settings, problems, and CSV + JSON storage.

Columns (contracts): record_id, subject_id, ecg_time, the inputs of every risk model
(clef_core.risk.ALL_INPUTS: age, sex, sbp, total_chol, hdl, smoking, diabetes, bmi, egfr,
bp_treated, statin, hba1c, uacr, diabetes_age), risk, completeness, risk_reason, model, imputed,
policy, region, risk_model, src_<input> for each input (where the value came from, "" when
missing), plus source-specific extras (e.g. ``dx`` for CinC headers). A missing value is NaN,
never 0. risk and completeness are those of the configured [risk] model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clef_core.config import require
from clef_core.risk import ALL_INPUTS, RiskSettings, risk_frame

FORMAT_VERSION = 1
BASE_COLUMNS = ("record_id", "subject_id", "ecg_time", *ALL_INPUTS)
RISK_COLUMNS = ("risk", "completeness", "risk_reason", "model", "imputed", "policy", "region", "risk_model")
SRC_COLUMNS = tuple(f"src_{name}" for name in ALL_INPUTS)
NUMERIC_INPUTS = tuple(name for name in ALL_INPUTS if name != "sex")
PROBLEM_COLUMNS = ("record_id", "subject_id", "field", "raw_value", "source", "message")


# keyword names of the [risk] options in the JSON sidecar and in extract_clinical_table(**overrides)
SIDECAR_RISK_KEYS = {"region": "region", "policy": "missing_policy", "risk_model": "model", "prevent_variant": "prevent_variant",
                     "prevent_horizon": "prevent_horizon", "prevent_outcome": "prevent_outcome", "pce_race": "pce_race"}


@dataclasses.dataclass(frozen=True)
class MetadataConfig:
    """Extraction settings: the [metadata] section and the [risk] model (``risk``; an
    :class:`~clef_core.experiment.Experiment` holds the same :class:`RiskSettings` as its ``risk``)."""

    window_days: int = 365  # a measured value counts when at most this old at the ECG
    diagnosis_window_days: int = 3650  # admissions (diagnosis codes) at most this old
    hosp_dir: str = ""  # MIMIC-IV hosp folder; "" = COHORT/hosp
    diagnosis_time: str = "admittime"  # admission time a code is dated by: admittime | dischtime
    absent_code_is_negative: bool = True  # admissions in the window but no code -> 0 (else NaN)
    risk: RiskSettings = dataclasses.field(default_factory=RiskSettings)

    def __post_init__(self) -> None:
        require(self.window_days > 0, "metadata.window_days", self.window_days, "> 0")
        require(self.diagnosis_window_days > 0, "metadata.diagnosis_window_days", self.diagnosis_window_days, "> 0")
        require(self.diagnosis_time in ("admittime", "dischtime"), "metadata.diagnosis_time", self.diagnosis_time,
                "admittime or dischtime")

    def replace(self, **changes: Any) -> MetadataConfig:
        """A copy with ``changes``: [metadata] keys, ``risk``, or the sidecar's names of the [risk] options
        (``region``, ``policy``, ``risk_model``, ``prevent_variant``, ``prevent_horizon``, ``prevent_outcome``,
        ``pce_race``)."""
        risk = {SIDECAR_RISK_KEYS[k]: changes.pop(k) for k in list(changes) if k in SIDECAR_RISK_KEYS}
        out = dataclasses.replace(self, **changes)
        return dataclasses.replace(out, risk=dataclasses.replace(out.risk, **risk)) if risk else out

    def sidecar(self) -> dict[str, Any]:
        """The settings as the table's JSON sidecar has always stored them (flat, [risk] options renamed)."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "risk"}
        return {**plain, **{key: getattr(self.risk, field) for key, field in SIDECAR_RISK_KEYS.items()}}


@dataclasses.dataclass
class ClinicalTable:
    """``table``: one row per ECG record; ``problems``: values reported and treated as missing
    (columns record_id, subject_id, field, raw_value, source, message); ``settings``: what
    produced it (kind, policy, region, windows, reference population, version)."""

    table: pd.DataFrame
    problems: pd.DataFrame
    settings: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        t = self.table
        rho = t["completeness"].round(3).value_counts().sort_index() if len(t) else pd.Series(dtype=int)
        return {
            "records": int(len(t)),
            "subjects": int(t["subject_id"].nunique()) if len(t) else 0,
            "risk_defined": int(t["risk"].notna().sum()),
            "completeness": {f"{k:.3f}": int(v) for k, v in rho.items()},
            "present": {name: int(t[name].notna().sum()) for name in ALL_INPUTS if name in t},
            "problems": int(len(self.problems)),
            "risk_model": self.settings.get("risk_model", "score2"),
            "policy": self.settings.get("policy"),
            "region": self.settings.get("region"),
        }


def problems_frame(rows: list[dict[str, Any]] | pd.DataFrame | None = None) -> pd.DataFrame:
    """A problems DataFrame with the standard columns (all str)."""
    df = pd.DataFrame(rows if rows is not None else [], columns=list(PROBLEM_COLUMNS))
    return df.astype({c: str for c in PROBLEM_COLUMNS}) if len(df) else df.astype(object)


def finalize(values: pd.DataFrame, problems: pd.DataFrame, settings: MetadataConfig, kind: str, extra_reasons: pd.Series | None = None) -> ClinicalTable:
    """Add risk / completeness (the configured clef_core.risk model) to extracted values and
    order the columns.

    ``values`` holds record_id, subject_id, ecg_time, the inputs it has and src_<input>;
    ``extra_reasons`` (optional, "" = none) is prefixed to risk_reason where risk is undefined
    (e.g. MIMIC's capped ages).
    """
    from clef_core.reference_population import REFERENCE_ID

    df = values.reset_index(drop=True).copy()
    for name in BASE_COLUMNS:
        if name not in df.columns:
            df[name] = np.nan
    for name in SRC_COLUMNS:
        df[name] = df[name].fillna("").astype(str) if name in df.columns else ""
    df["record_id"] = df["record_id"].astype(str)
    df["subject_id"] = df["subject_id"].astype(str)
    df["ecg_time"] = pd.to_datetime(df["ecg_time"], errors="coerce")
    for name in NUMERIC_INPUTS:
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    df["sex"] = df["sex"].astype(object).where(df["sex"].notna(), None)
    risk = risk_frame(df[list(ALL_INPUTS)], settings.risk)
    if extra_reasons is not None:
        extra = extra_reasons.reset_index(drop=True).fillna("").astype(str)
        use = (extra != "") & risk["risk"].isna()
        risk.loc[use, "risk_reason"] = extra[use] + "; " + risk.loc[use, "risk_reason"]
        risk["risk_reason"] = risk["risk_reason"].str.rstrip("; ")
    extras = [c for c in df.columns if c not in (*BASE_COLUMNS, *SRC_COLUMNS, *RISK_COLUMNS)]
    table = pd.concat([df[list(BASE_COLUMNS)], risk[list(RISK_COLUMNS)], df[list(SRC_COLUMNS) + extras]], axis=1)
    info = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        **settings.sidecar(),
        "reference_population": REFERENCE_ID if settings.risk.missing_policy == "impute_reference" else None,
    }
    return ClinicalTable(table=table, problems=problems_frame(problems), settings=info)


def sidecar_paths(path: str | Path) -> tuple[Path, Path]:
    """(problems CSV, JSON sidecar) beside the table CSV ``path``."""
    path = Path(path)
    stem = path.name[: -len(".csv")] if path.name.endswith(".csv") else path.name
    return path.with_name(f"{stem}.problems.csv"), path.with_name(f"{stem}.json")


def save_clinical_table(ct: ClinicalTable, path: str | Path) -> Path:
    """Write ``path`` (the table, CSV), ``<stem>.problems.csv`` and ``<stem>.json`` (settings,
    summary). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    problems_path, json_path = sidecar_paths(path)
    ct.table.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    ct.problems.to_csv(problems_path, index=False)
    meta = {**ct.settings, "clef_version": _package_version(), "summary": ct.summary()}
    json_path.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return path


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clef-fl")
    except PackageNotFoundError:
        return "0+unknown"


def load_clinical_table(path: str | Path) -> ClinicalTable:
    """Read a table written by :func:`save_clinical_table` (ids as str, ecg_time as datetime)."""
    path = Path(path)
    problems_path, json_path = sidecar_paths(path)
    text_cols = {"record_id": str, "subject_id": str, "sex": object, "risk_reason": str, "imputed": str, "model": str, "risk_model": str}
    text_cols.update({c: str for c in SRC_COLUMNS})
    table = pd.read_csv(path, dtype=text_cols, keep_default_na=False,
                        na_values={c: [""] for c in (*NUMERIC_INPUTS, "risk", "completeness", "sex", "ecg_time", "dx")})
    table["ecg_time"] = pd.to_datetime(table["ecg_time"], errors="coerce")
    table["sex"] = table["sex"].where(table["sex"].notna(), None)
    problems = pd.read_csv(problems_path, dtype=str, keep_default_na=False) if problems_path.is_file() else problems_frame()
    settings = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else {}
    settings.pop("summary", None)
    return ClinicalTable(table=table, problems=problems_frame(problems), settings=settings)
