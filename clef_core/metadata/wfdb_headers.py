"""SCORE2 inputs from the comment lines of WFDB headers (no signal is read).

Understood styles:
  * PhysioNet/CinC 2020-21: "# Age: 59", "# Sex: Female", "# Dx: 164934002,427084000" (the Dx
    codes are kept in a ``dx`` column);
  * PTB Diagnostic: free text "age: 81", "sex: female", "Smoker: no", "Peripheral blood Pressure
    (syst/diast):  140/80 mmHg", "Additional diagnoses: Diabetes mellitus", "ECG date: 01/10/1990";
  * MIT-BIH: a first comment line "69 M 1085 1629 x1" (age, sex, then recording details).
Generic "Key: value" lines named like the inputs (blood pressure / systolic, cholesterol, HDL,
diabetes, smoker) are read too. Missing markers ("Unknown", "n/a", "NaN", "?") mean missing;
anything else that does not parse or is implausible is reported in ``problems`` and treated
as missing. Diabetes: "diabet" in a diagnosis line -> 1; a diagnosis line without it -> 0 when
``absent_code_is_negative`` (the same weak-evidence rule as for MIMIC codes), else missing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clef_core.metadata.table import ClinicalTable, MetadataConfig, finalize
from clef_core.score2 import MG_DL_PER_MMOL_L, PLAUSIBLE

MISSING_WORDS = {"", "unknown", "n/a", "na", "nan", "none", "?", "-", "not available", "unk"}
YES = {"yes", "y", "1", "true", "current", "current smoker", "smoker"}
NO = {"no", "n", "0", "false", "never", "non-smoker", "nonsmoker", "former", "ex", "ex-smoker"}
SEX = {"male": "male", "m": "male", "female": "female", "f": "female"}
AGE_RANGE = (0.0, 120.0)  # a header age outside this is a data error
DIAGNOSIS_KEYS = ("additional diagnoses", "diagnose", "diagnosis", "diagnoses", "reason for admission")
_KEY_VALUE = re.compile(r"^\s*([A-Za-z][^:]{0,80}?)\s*:\s*(.*?)\s*$")
_MITDB = re.compile(r"^\s*(\d{1,3}|\?)\s+([MF?])\b", re.IGNORECASE)
_BP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*(?:mm\s*hg)?\s*$", re.IGNORECASE)
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mmol/l|mg/dl)?\s*$", re.IGNORECASE)


class _Record:
    """Values and problems of one header, filled field by field."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id
        self.values: dict[str, Any] = {"record_id": record_id, "subject_id": record_id}
        self.problems: list[dict[str, str]] = []

    def set(self, field: str, value: Any, src: str) -> None:
        self.values[field] = value
        self.values[f"src_{field}"] = src

    def problem(self, field: str, raw: str, message: str) -> None:
        self.problems.append(
            {"record_id": self.record_id, "subject_id": self.record_id, "field": field, "raw_value": raw, "source": "header", "message": message}
        )


def _is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING_WORDS


def _age(rec: _Record, raw: str, src: str) -> None:
    if _is_missing(raw):
        return
    try:
        age = float(raw.split()[0])
    except (ValueError, IndexError):
        rec.problem("age", raw, "age not a number")
        return
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1] or np.isnan(age):
        rec.problem("age", raw, f"age outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g}")
        return
    rec.set("age", age, src)


def _sex(rec: _Record, raw: str, src: str) -> None:
    if _is_missing(raw):
        return
    sex = SEX.get(raw.strip().lower())
    if sex is None:
        rec.problem("sex", raw, "sex not male/female")
    else:
        rec.set("sex", sex, src)


def _flag(rec: _Record, field: str, raw: str, src: str) -> None:
    word = raw.strip().lower()
    if _is_missing(word):
        return
    if word in YES:
        rec.set(field, 1.0, src)
    elif word in NO:
        rec.set(field, 0.0, src)
    else:
        rec.problem(field, raw, "not yes/no")


def _sbp(rec: _Record, raw: str, src: str) -> None:
    if _is_missing(raw):
        return
    m = _BP.match(raw) or _NUMBER_UNIT.match(raw.replace("mmHg", "").replace("mmhg", ""))
    if m is None:
        rec.problem("sbp", raw, "blood pressure not 'systolic/diastolic mmHg'")
        return
    sbp = float(m.group(1))
    lo, hi = PLAUSIBLE["sbp"]
    if not lo <= sbp <= hi:
        rec.problem("sbp", raw, f"systolic outside {lo:g}-{hi:g} mmHg")
        return
    rec.set("sbp", sbp, src)


def _lipid(rec: _Record, field: str, raw: str, src: str) -> None:
    if _is_missing(raw):
        return
    m = _NUMBER_UNIT.match(raw)
    if m is None:
        rec.problem(field, raw, "not '<number> mmol/L' or '<number> mg/dL'")
        return
    value = float(m.group(1))
    if (m.group(2) or "").lower() == "mg/dl":
        value /= MG_DL_PER_MMOL_L
    lo, hi = PLAUSIBLE[field]
    if not lo <= value <= hi:
        rec.problem(field, raw, f"outside {lo:g}-{hi:g} mmol/L")
        return
    rec.set(field, value, src)


def _field_of(key: str) -> str | None:
    """Which input a "Key:" names (None: not an input)."""
    if key in ("age",):
        return "age"
    if key in ("sex", "gender"):
        return "sex"
    if key in ("dx",):
        return "dx"
    if key in ("smoker", "smoking", "current smoker"):
        return "smoking"
    if key in ("diabetes", "diabetes mellitus", "diabetic"):
        return "diabetes"
    if key in DIAGNOSIS_KEYS:
        return "diagnoses"
    if key in ("ecg date",):
        return "ecg_date"
    if "blood pressure" in key or key in ("bp", "sbp", "systolic", "systolic blood pressure"):
        # PTB also has pulmonary-artery and aortic pressures: only peripheral/arterial BP is SBP.
        if any(word in key for word in ("pulmonary", "aorta", "capillary", "wedge", "venous", "ventricular")):
            return None
        return "sbp"
    if key in ("hdl", "hdl cholesterol", "hdl-c"):
        return "hdl"
    if key in ("cholesterol", "total cholesterol", "tc"):
        return "total_chol"
    return None


def parse_comments(record_id: str, comments: list[str], settings: MetadataConfig) -> _Record:
    """Values (with src_<field>) and problems of one header's comment lines."""
    rec = _Record(record_id)
    diagnosis_lines: list[str] = []
    for i, line in enumerate(comments):
        m = _KEY_VALUE.match(line)
        if m is None:
            mit = _MITDB.match(line) if i == 0 else None
            if mit is not None:
                _age(rec, mit.group(1), "header (MIT-BIH line 1)")
                _sex(rec, mit.group(2), "header (MIT-BIH line 1)")
            continue
        key, raw = " ".join(m.group(1).lower().split()), m.group(2)
        field = _field_of(key)
        src = f"header {m.group(1).strip()}"
        if field == "age":
            _age(rec, raw, src)
        elif field == "sex":
            _sex(rec, raw, src)
        elif field == "dx":
            rec.values["dx"] = "" if _is_missing(raw) else raw.strip()
        elif field in ("smoking", "diabetes"):
            _flag(rec, field, raw, src)
        elif field == "sbp":
            _sbp(rec, raw, src)
        elif field in ("total_chol", "hdl"):
            _lipid(rec, field, raw, src)
        elif field == "diagnoses" and not _is_missing(raw):
            diagnosis_lines.append(f"{m.group(1).strip()}: {raw}")
        elif field == "ecg_date" and not _is_missing(raw):
            when = pd.to_datetime(raw, dayfirst=True, errors="coerce")
            if pd.isna(when):
                rec.problem("ecg_time", raw, "ECG date not a date")
            else:
                rec.values["ecg_time"] = when
    if "diabetes" not in rec.values and diagnosis_lines:
        hit = [line for line in diagnosis_lines if "diabet" in line.lower()]
        if hit:
            rec.set("diabetes", 1.0, f"header {hit[0].split(':')[0]}")
        elif settings.absent_code_is_negative:
            rec.set("diabetes", 0.0, "header diagnoses without diabetes")
    return rec


def header_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.hea") if p.is_file())


def extract_wfdb(folder: str | Path, settings: MetadataConfig) -> ClinicalTable:
    """The clinical table of every WFDB record under ``folder`` (header comments only)."""
    import wfdb

    folder = Path(folder)
    rows, problems = [], []
    for path in header_paths(folder):
        record_id = path.relative_to(folder).with_suffix("").as_posix()
        try:
            header = wfdb.rdheader(str(path.with_suffix("")))
        except Exception as exc:  # a broken header is one record's problem, not the extraction's
            problems.append({"record_id": record_id, "subject_id": record_id, "field": "header", "raw_value": path.name, "source": "header", "message": f"unreadable header: {exc}"})
            rows.append({"record_id": record_id, "subject_id": record_id})
            continue
        rec = parse_comments(record_id, list(header.comments or []), settings)
        if "ecg_time" not in rec.values and getattr(header, "base_date", None) is not None:
            rec.values["ecg_time"] = pd.Timestamp.combine(header.base_date, header.base_time or pd.Timestamp(0).time())
        rows.append(rec.values)
        problems.extend(rec.problems)
    values = pd.DataFrame(rows)
    if "dx" in values.columns:
        values["dx"] = values["dx"].fillna("").astype(str)
    return finalize(values, pd.DataFrame(problems) if problems else None, settings, kind="wfdb")
