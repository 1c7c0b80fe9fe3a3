"""SCORE2 inputs of every ECG of a MIMIC-IV-ECG cohort, from the MIMIC-IV hosp module.

Rules (see docs/clinical-metadata.md):
  * age at the ECG = anchor_age + year(ecg_time) - anchor_year (patients); anchor_age 91 is
    MIMIC's cap (">89"): age unknown, SCORE2 undefined. sex from ``gender`` M/F.
  * sbp: omr rows "Blood Pressure" / "Blood Pressure Sitting", "120/80" strings; total
    cholesterol (itemid 50907) and HDL (50904): labevents, mg/dL -> mmol/L (/38.67). Each value
    is the one nearest BEFORE the ECG (at or before ecg_time), no older than ``window_days``.
    omr has only a chartdate: a reading of the ECG's day counts as before it.
  * diabetes (ICD-10 E08-E13, ICD-9 250.x) and current smoking (ICD-10 F17.2x, Z72.0; ICD-9
    305.1) from diagnoses_icd, dated by their admission (``diagnosis_time``: admittime, or
    dischtime for strictly prior knowledge). A code in an admission of the window
    [ecg_time - diagnosis_window_days, ecg_time] -> 1; admissions in the window but no code ->
    0 when ``absent_code_is_negative`` (absence of a code is weak evidence: MIMIC codes what
    was treated), else NaN; no admission in the window -> NaN.
Unparsable or implausible values are reported in ``problems`` and treated as missing. Every
step is a vectorised pandas operation (``merge_asof`` by subject), so the ~800K ECGs of
MIMIC-IV-ECG are handled without per-row Python loops.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from clef_core.data.records import find_table
from clef_core.metadata.table import ClinicalTable, MetadataConfig, finalize
from clef_core.score2 import MG_DL_PER_MMOL_L, PLAUSIBLE

BP_RESULT_NAMES = ("Blood Pressure", "Blood Pressure Sitting")
ITEM_TOTAL_CHOL, ITEM_HDL = 50907, 50904
MIMIC_AGE_CAP = 91  # anchor_age of every patient older than 89
DIABETES_CODES = {10: ("E08", "E09", "E10", "E11", "E12", "E13"), 9: ("250",)}
SMOKING_CODES = {10: ("F172", "Z720"), 9: ("3051",)}
LAB_CHUNK_ROWS = 2_000_000
_BP = r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$"


def _problem(frame: pd.DataFrame, field: str, raw: pd.Series, source: str, message: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": frame["record_id"].astype(str) if "record_id" in frame else "",
            "subject_id": frame["subject_id"].astype(str),
            "field": field,
            "raw_value": raw.astype(str).to_numpy(),
            "source": source,
            "message": message,
        }
    )


def read_records(root: Path) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    path = find_table(root, "record_list")
    if path is None:
        raise FileNotFoundError(f"{root}: no record_list.csv(.gz): not a MIMIC-IV-ECG layout")
    rl = pd.read_csv(path, usecols=["subject_id", "study_id", "ecg_time"], dtype={"study_id": str})
    problems = []
    rl["record_id"] = rl["study_id"].astype(str)
    rl["subject_id"] = pd.to_numeric(rl["subject_id"], errors="coerce").astype("Int64")
    raw_time = rl["ecg_time"]
    rl["ecg_time"] = pd.to_datetime(raw_time, errors="coerce", format="mixed")
    bad = rl["ecg_time"].isna()
    if bad.any():
        problems.append(_problem(rl[bad], "ecg_time", raw_time[bad], path.name, "unparsable ECG time: windowed values missing"))
    dup = rl["record_id"].duplicated()
    if dup.any():
        raise ValueError(f"{path}: study_id {rl.loc[dup, 'record_id'].iloc[0]} appears more than once")
    return rl[["record_id", "subject_id", "ecg_time"]].reset_index(drop=True), problems


def demographics(records: pd.DataFrame, hosp: Path) -> tuple[pd.DataFrame, pd.Series, list[pd.DataFrame]]:
    """age, sex, src_age, src_sex per record; the capped-age reasons; problems."""
    out = pd.DataFrame(index=records.index, columns=["age", "sex", "src_age", "src_sex"], dtype=object)
    capped_reason = pd.Series("", index=records.index, dtype=object)
    path = find_table(hosp, "patients")
    if path is None:
        return out, capped_reason, [_missing_table(hosp, "patients", "age and sex")]
    pat = pd.read_csv(path, usecols=["subject_id", "gender", "anchor_age", "anchor_year"])
    pat["subject_id"] = pd.to_numeric(pat["subject_id"], errors="coerce").astype("Int64")
    pat = pat.drop_duplicates("subject_id", keep="last")
    m = records[["record_id", "subject_id", "ecg_time"]].merge(pat, on="subject_id", how="left")
    problems = []
    anchor_age = pd.to_numeric(m["anchor_age"], errors="coerce")
    anchor_year = pd.to_numeric(m["anchor_year"], errors="coerce")
    capped = anchor_age >= MIMIC_AGE_CAP
    age = anchor_age + m["ecg_time"].dt.year - anchor_year
    age = age.where(~capped)
    implausible = age.notna() & ((age < 0) | (age > 120))
    if implausible.any():
        problems.append(_problem(m[implausible], "age", age[implausible], path.name, "age at ECG outside 0-120"))
    age = age.where(~implausible)
    sex = m["gender"].astype("string").str.strip().str.upper().map({"M": "male", "F": "female"})
    bad_sex = m["gender"].notna() & sex.isna()
    if bad_sex.any():
        problems.append(_problem(m[bad_sex], "sex", m.loc[bad_sex, "gender"], path.name, "gender not M/F"))
    out["age"] = age.to_numpy(dtype=float)
    out["sex"] = sex.astype(object).where(sex.notna(), None).to_numpy()
    out["src_age"] = np.where(age.notna(), "patients.anchor_age", np.where(capped, "patients.anchor_age=91 (>89, capped)", ""))
    out["src_sex"] = np.where(sex.notna(), "patients.gender", "")
    capped_reason[capped.to_numpy()] = "age >89 (MIMIC anchor_age 91)"
    return out, capped_reason, problems


def _missing_table(hosp: Path, name: str, what: str) -> pd.DataFrame:
    return pd.DataFrame(
        [{"record_id": "", "subject_id": "", "field": name, "raw_value": str(hosp / f"{name}.csv(.gz)"), "source": name, "message": f"table not found: {what} missing for every record"}]
    )


def nearest_before(records: pd.DataFrame, events: pd.DataFrame, window: pd.Timedelta) -> pd.DataFrame:
    """For each record, the row of ``events`` (subject_id, time, ...) of the same subject with the
    latest time <= ecg_time and >= ecg_time - window; aligned to ``records.index`` (NaN: none)."""
    left = records.loc[records["ecg_time"].notna() & records["subject_id"].notna(), ["subject_id", "ecg_time"]]
    left = left.assign(_row=left.index).sort_values("ecg_time", kind="stable")
    right = events.dropna(subset=["time", "subject_id"]).sort_values("time", kind="stable")
    merged = pd.merge_asof(
        left, right, left_on="ecg_time", right_on="time", by="subject_id", direction="backward", tolerance=window, allow_exact_matches=True
    )
    return merged.set_index("_row").drop(columns=["subject_id", "ecg_time"]).reindex(records.index)


def blood_pressure(records: pd.DataFrame, hosp: Path, window: pd.Timedelta) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    path = find_table(hosp, "omr")
    if path is None:
        return pd.DataFrame({"sbp": np.nan, "src_sbp": ""}, index=records.index), [_missing_table(hosp, "omr", "sbp")]
    omr = pd.read_csv(path, usecols=["subject_id", "chartdate", "seq_num", "result_name", "result_value"])
    omr["subject_id"] = pd.to_numeric(omr["subject_id"], errors="coerce").astype("Int64")
    omr = omr[omr["result_name"].isin(BP_RESULT_NAMES) & omr["subject_id"].isin(records["subject_id"].dropna().unique())]
    parts = omr["result_value"].astype(str).str.extract(_BP)
    sbp = pd.to_numeric(parts[0], errors="coerce")
    problems = []
    unparsable = sbp.isna()
    if unparsable.any():
        problems.append(_problem(omr[unparsable], "sbp", omr.loc[unparsable, "result_value"], path.name, "blood pressure not 'systolic/diastolic'"))
    lo, hi = PLAUSIBLE["sbp"]
    implausible = sbp.notna() & ((sbp < lo) | (sbp > hi))
    if implausible.any():
        problems.append(_problem(omr[implausible], "sbp", omr.loc[implausible, "result_value"], path.name, f"systolic outside {lo:g}-{hi:g} mmHg"))
    keep = sbp.notna() & ~implausible
    events = pd.DataFrame(
        {
            "subject_id": omr.loc[keep, "subject_id"],
            "time": pd.to_datetime(omr.loc[keep, "chartdate"], errors="coerce"),
            "seq": pd.to_numeric(omr.loc[keep, "seq_num"], errors="coerce"),
            "sbp": sbp[keep],
        }
    ).sort_values(["time", "seq"], kind="stable")
    hit = nearest_before(records, events.drop(columns="seq"), window)
    src = np.where(hit["sbp"].notna(), "omr " + hit["time"].dt.strftime("%Y-%m-%d").fillna(""), "")
    return pd.DataFrame({"sbp": hit["sbp"].to_numpy(), "src_sbp": src}, index=records.index), problems


def _read_lipids(path: Path, subjects: np.ndarray, say: Callable[[str], None] | None = None) -> pd.DataFrame:
    cols = ["subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"]
    chunks = []
    for k, chunk in enumerate(pd.read_csv(path, usecols=cols, chunksize=LAB_CHUNK_ROWS,
                                          dtype={"value": str, "valueuom": str})):
        if say is not None:
            say(f"{path.name}: {k * LAB_CHUNK_ROWS + len(chunk):,} rows read")
        chunk = chunk[chunk["itemid"].isin([ITEM_TOTAL_CHOL, ITEM_HDL])]
        chunk = chunk.assign(subject_id=pd.to_numeric(chunk["subject_id"], errors="coerce").astype("Int64"))
        chunks.append(chunk[chunk["subject_id"].isin(subjects)])
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=cols)


def lipids(records: pd.DataFrame, hosp: Path, window: pd.Timedelta,
           say: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    out = pd.DataFrame({"total_chol": np.nan, "hdl": np.nan, "src_total_chol": "", "src_hdl": ""}, index=records.index)
    path = find_table(hosp, "labevents")
    if path is None:
        return out, [_missing_table(hosp, "labevents", "total_chol and hdl")]
    labs = _read_lipids(path, records["subject_id"].dropna().unique(), say)
    problems = []
    value = pd.to_numeric(labs["valuenum"], errors="coerce").fillna(pd.to_numeric(labs["value"], errors="coerce"))
    unit = labs["valueuom"].fillna("mg/dL").astype(str).str.strip().str.lower()
    factor = unit.map({"mg/dl": 1.0 / MG_DL_PER_MMOL_L, "mmol/l": 1.0})
    mmol = value * factor
    for field, item in (("total_chol", ITEM_TOTAL_CHOL), ("hdl", ITEM_HDL)):
        is_item = labs["itemid"] == item
        raw = labs["value"].fillna(labs["valuenum"].astype(str)) + " " + labs["valueuom"].fillna("")
        for bad, message in (
            (is_item & value.isna(), "lab value not a number"),
            (is_item & value.notna() & factor.isna(), "unknown unit (expected mg/dL or mmol/L)"),
        ):
            if bad.any():
                problems.append(_problem(labs[bad], field, raw[bad], path.name, message))
        lo, hi = PLAUSIBLE[field]
        implausible = is_item & mmol.notna() & ((mmol < lo) | (mmol > hi))
        if implausible.any():
            problems.append(_problem(labs[implausible], field, raw[implausible], path.name, f"outside {lo:g}-{hi:g} mmol/L"))
        keep = is_item & mmol.notna() & ~implausible
        events = pd.DataFrame({"subject_id": labs.loc[keep, "subject_id"], "time": pd.to_datetime(labs.loc[keep, "charttime"], errors="coerce"), field: mmol[keep]})
        hit = nearest_before(records, events, window)
        out[field] = hit[field].to_numpy(dtype=float)
        out[f"src_{field}"] = np.where(hit[field].notna(), f"labevents {item} " + hit["time"].dt.strftime("%Y-%m-%d %H:%M").fillna(""), "")
    return out, problems


def _has_code(codes: pd.Series, versions: pd.Series, table: dict[int, tuple[str, ...]]) -> pd.Series:
    hit = pd.Series(False, index=codes.index)
    for version, prefixes in table.items():
        hit |= (versions == version) & codes.str.startswith(prefixes)
    return hit


def _window_count(records: pd.DataFrame, events: pd.DataFrame, column: str, window: pd.Timedelta) -> np.ndarray:
    """Sum of ``events[column]`` over the subject's events with time in [ecg_time - window, ecg_time],
    as the difference of two cumulative sums looked up with merge_asof."""
    ev = events.sort_values(["subject_id", "time"], kind="stable")
    ev = ev.assign(_cum=ev.groupby("subject_id")[column].cumsum())[["subject_id", "time", "_cum"]].sort_values("time", kind="stable")
    left = records.loc[records["ecg_time"].notna() & records["subject_id"].notna(), ["subject_id", "ecg_time"]]
    left = left.assign(_row=left.index, _start=left["ecg_time"] - window)
    at_end = pd.merge_asof(left.sort_values("ecg_time"), ev, left_on="ecg_time", right_on="time", by="subject_id", direction="backward")
    before = pd.merge_asof(
        left.sort_values("_start"), ev, left_on="_start", right_on="time", by="subject_id", direction="backward", allow_exact_matches=False
    )
    end = at_end.set_index("_row")["_cum"].reindex(records.index).fillna(0)
    start = before.set_index("_row")["_cum"].reindex(records.index).fillna(0)
    return (end - start).to_numpy(dtype=float)


def diagnoses(records: pd.DataFrame, hosp: Path, settings: MetadataConfig) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    out = pd.DataFrame({"smoking": np.nan, "diabetes": np.nan, "src_smoking": "", "src_diabetes": ""}, index=records.index)
    adm_path, dx_path = find_table(hosp, "admissions"), find_table(hosp, "diagnoses_icd")
    if adm_path is None or dx_path is None:
        return out, [_missing_table(hosp, "admissions" if adm_path is None else "diagnoses_icd", "smoking and diabetes")]
    subjects = records["subject_id"].dropna().unique()
    adm = pd.read_csv(adm_path, usecols=["subject_id", "hadm_id", settings.diagnosis_time])
    adm["subject_id"] = pd.to_numeric(adm["subject_id"], errors="coerce").astype("Int64")
    adm = adm[adm["subject_id"].isin(subjects)]
    adm = adm.assign(time=pd.to_datetime(adm[settings.diagnosis_time], errors="coerce")).dropna(subset=["time"])
    dx = pd.read_csv(dx_path, usecols=["hadm_id", "icd_code", "icd_version"], dtype={"icd_code": str})
    dx = dx[dx["hadm_id"].isin(adm["hadm_id"])]
    codes = dx["icd_code"].fillna("").str.replace(".", "", regex=False).str.strip().str.upper()
    versions = pd.to_numeric(dx["icd_version"], errors="coerce")
    flags = pd.DataFrame(
        {"hadm_id": dx["hadm_id"], "diabetes": _has_code(codes, versions, DIABETES_CODES), "smoking": _has_code(codes, versions, SMOKING_CODES)}
    ).groupby("hadm_id")[["diabetes", "smoking"]].any()
    events = adm.merge(flags, left_on="hadm_id", right_index=True, how="left").fillna({"diabetes": False, "smoking": False})
    events = events.assign(admissions=1, diabetes=events["diabetes"].astype(int), smoking=events["smoking"].astype(int))
    window = pd.Timedelta(days=settings.diagnosis_window_days)
    n_adm = _window_count(records, events, "admissions", window)
    for field in ("diabetes", "smoking"):
        n_coded = _window_count(records, events, field, window)
        absent = 0.0 if settings.absent_code_is_negative else np.nan
        out[field] = np.where(n_coded > 0, 1.0, np.where(n_adm > 0, absent, np.nan))
        out[f"src_{field}"] = np.where(
            n_coded > 0, "diagnoses_icd", np.where((n_adm > 0) & settings.absent_code_is_negative, "admissions without code", "")
        )
    return out, []


def extract_mimic(root: str | Path, settings: MetadataConfig,
                  progress: Callable[[str], None] | None = None) -> ClinicalTable:
    """The clinical table of the MIMIC-IV-ECG cohort ``root`` (hosp tables in
    ``settings.hosp_dir`` or ``root/hosp``); ``progress`` gets a line per step (labevents: per
    chunk of rows)."""
    say = progress or (lambda message: None)
    root = Path(root)
    hosp = Path(settings.hosp_dir) if settings.hosp_dir else root / "hosp"
    say(f"record_list: reading {root}")
    records, problems = read_records(root)
    say(f"patients: age and sex of {len(records):,} records")
    demo, capped_reason, p = demographics(records, hosp)
    problems += p
    say("omr: systolic blood pressure")
    bp, p = blood_pressure(records, hosp, pd.Timedelta(days=settings.window_days))
    problems += p
    say("labevents: total and HDL cholesterol")
    labs, p = lipids(records, hosp, pd.Timedelta(days=settings.window_days), progress)
    problems += p
    say("admissions, diagnoses_icd: diabetes and smoking codes")
    dx, p = diagnoses(records, hosp, settings)
    problems += p
    values = pd.concat([records.assign(subject_id=records["subject_id"].astype(str).replace("<NA>", "")), demo, bp, labs, dx], axis=1)
    values.loc[values["subject_id"] == "", "subject_id"] = values["record_id"]
    problem_frame = pd.concat(problems, ignore_index=True) if problems else None
    return finalize(values, problem_frame, settings, kind="mimic", extra_reasons=capped_reason)
