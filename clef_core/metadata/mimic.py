"""Risk-model inputs of every ECG of a MIMIC-IV-ECG cohort, from the MIMIC-IV hosp module.

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
  * PREVENT / PCE / SCORE2-Diabetes inputs, each nearest before the ECG within ``window_days``:
    bmi (omr "BMI (kg/m2)"); egfr from serum creatinine (labevents 50912, mg/dL or umol/L) by
    CKD-EPI 2021 without race (clef_core.risk.egfr) at the age of the ECG; hba1c (labevents
    50852, %); uacr (labevents 51070 "Albumin/Creatinine, Urine", mg/g; mg/mmol * 8.84).
    bp_treated / statin from prescriptions: an antihypertensive / statin (generic names in
    :data:`ANTIHYPERTENSIVES`, :data:`STATINS`) started in [ecg_time - window_days, ecg_time]
    -> 1; other prescriptions in that window but none of the class -> 0 when
    ``absent_code_is_negative``, else NaN; no prescription in the window -> NaN.
    diabetes_age: the age at the first diabetes-coded admission at or before the ECG (an upper
    bound of the age at diagnosis: MIMIC holds no onset date), only where diabetes is 1.
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
from clef_core.risk.egfr import UMOL_L_PER_MG_DL, ckd_epi_2021
from clef_core.risk.frame import RANGES
from clef_core.score2 import MG_DL_PER_MMOL_L, PLAUSIBLE

BP_RESULT_NAMES = ("Blood Pressure", "Blood Pressure Sitting")
BMI_RESULT_NAMES = ("BMI (kg/m2)", "BMI")
ITEM_TOTAL_CHOL, ITEM_HDL = 50907, 50904
ITEM_CREATININE, ITEM_HBA1C, ITEM_UACR = 50912, 50852, 51070
LAB_ITEMS = (ITEM_TOTAL_CHOL, ITEM_HDL, ITEM_CREATININE, ITEM_HBA1C, ITEM_UACR)
ANTIHYPERTENSIVES = (  # generic names (substring, case-insensitive) of the first-line classes
    "lisinopril", "enalapril", "ramipril", "captopril", "benazepril", "quinapril", "fosinopril", "perindopril", "trandolapril",
    "losartan", "valsartan", "irbesartan", "candesartan", "olmesartan", "telmisartan", "azilsartan", "sacubitril",
    "amlodipine", "nifedipine", "felodipine", "diltiazem", "verapamil", "nicardipine", "isradipine",
    "hydrochlorothiazide", "chlorthalidone", "indapamide", "metolazone", "furosemide", "torsemide", "bumetanide",
    "spironolactone", "eplerenone", "triamterene", "amiloride",
    "metoprolol", "atenolol", "carvedilol", "bisoprolol", "labetalol", "propranolol", "nadolol", "nebivolol",
    "clonidine", "hydralazine", "minoxidil", "doxazosin", "terazosin", "prazosin", "methyldopa",
)
STATINS = ("atorvastatin", "simvastatin", "rosuvastatin", "pravastatin", "lovastatin", "fluvastatin", "pitavastatin")
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
    right = right.assign(time=right["time"].astype(left["ecg_time"].dtype))  # one resolution (empty tables parse as [s])
    merged = pd.merge_asof(
        left, right, left_on="ecg_time", right_on="time", by="subject_id", direction="backward", tolerance=window, allow_exact_matches=True
    )
    return merged.set_index("_row").drop(columns=["subject_id", "ecg_time"]).reindex(records.index)


def _read_omr(hosp: Path, records: pd.DataFrame) -> tuple[pd.DataFrame | None, Path | None]:
    path = find_table(hosp, "omr")
    if path is None:
        return None, None
    omr = pd.read_csv(path, usecols=["subject_id", "chartdate", "seq_num", "result_name", "result_value"])
    omr["subject_id"] = pd.to_numeric(omr["subject_id"], errors="coerce").astype("Int64")
    return omr[omr["subject_id"].isin(records["subject_id"].dropna().unique())], path


def blood_pressure(records: pd.DataFrame, hosp: Path, window: pd.Timedelta, omr: pd.DataFrame | None = None,
                   path: Path | None = None) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    if omr is None:
        omr, path = _read_omr(hosp, records)
    if omr is None or path is None:
        return pd.DataFrame({"sbp": np.nan, "src_sbp": ""}, index=records.index), [_missing_table(hosp, "omr", "sbp and bmi")]
    omr = omr[omr["result_name"].isin(BP_RESULT_NAMES)]
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


def body_mass_index(records: pd.DataFrame, omr: pd.DataFrame | None, path: Path | None, window: pd.Timedelta) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """bmi (omr "BMI (kg/m2)") nearest before the ECG within ``window``."""
    out = pd.DataFrame({"bmi": np.nan, "src_bmi": ""}, index=records.index)
    if omr is None or path is None:
        return out, []
    rows = omr[omr["result_name"].isin(BMI_RESULT_NAMES)]
    bmi = pd.to_numeric(rows["result_value"], errors="coerce")
    lo, hi = RANGES["bmi"]
    bad = bmi.isna() | (bmi < lo) | (bmi > hi)
    problems = [_problem(rows[bad], "bmi", rows.loc[bad, "result_value"], path.name, f"BMI not a number in {lo:g}-{hi:g} kg/m2")] if bad.any() else []
    keep = ~bad
    events = pd.DataFrame({"subject_id": rows.loc[keep, "subject_id"], "time": pd.to_datetime(rows.loc[keep, "chartdate"], errors="coerce"),
                           "bmi": bmi[keep]})
    hit = nearest_before(records, events, window)
    out["bmi"] = hit["bmi"].to_numpy(dtype=float)
    out["src_bmi"] = np.where(hit["bmi"].notna(), "omr BMI " + hit["time"].dt.strftime("%Y-%m-%d").fillna(""), "")
    return out, problems


def _read_labs(path: Path, subjects: np.ndarray, say: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The rows of :data:`LAB_ITEMS` of the cohort's subjects, read in chunks."""
    cols = ["subject_id", "itemid", "charttime", "value", "valuenum", "valueuom"]
    chunks = []
    for k, chunk in enumerate(pd.read_csv(path, usecols=cols, chunksize=LAB_CHUNK_ROWS,
                                          dtype={"value": str, "valueuom": str})):
        if say is not None:
            say(f"{path.name}: {k * LAB_CHUNK_ROWS + len(chunk):,} rows read")
        chunk = chunk[chunk["itemid"].isin(LAB_ITEMS)]
        chunk = chunk.assign(subject_id=pd.to_numeric(chunk["subject_id"], errors="coerce").astype("Int64"))
        chunks.append(chunk[chunk["subject_id"].isin(subjects)])
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=cols)


def lipids(records: pd.DataFrame, hosp: Path, window: pd.Timedelta,
           say: Callable[[str], None] | None = None, labs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    out = pd.DataFrame({"total_chol": np.nan, "hdl": np.nan, "src_total_chol": "", "src_hdl": ""}, index=records.index)
    path = find_table(hosp, "labevents")
    if path is None:
        return out, [_missing_table(hosp, "labevents", "total_chol, hdl, creatinine (egfr), hba1c and uacr")]
    if labs is None:
        labs = _read_labs(path, records["subject_id"].dropna().unique(), say)
    labs = labs[labs["itemid"].isin([ITEM_TOTAL_CHOL, ITEM_HDL])]
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
    ev = ev.assign(time=ev["time"].astype(records["ecg_time"].dtype))
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
    out.attrs["events"] = events[["subject_id", "time", "diabetes"]]
    return out, []


def _lab_value(labs: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(numeric value, unit lower-case, raw text) of lab rows."""
    value = pd.to_numeric(labs["valuenum"], errors="coerce").astype(float).fillna(pd.to_numeric(labs["value"], errors="coerce").astype(float))
    unit = labs["valueuom"].fillna("").astype(str).str.strip().str.lower()
    raw = labs["value"].fillna(labs["valuenum"].astype(str)) + " " + labs["valueuom"].fillna("")
    return value, unit, raw


# field -> (itemid, unit -> factor to the table's unit, table unit)
KIDNEY_GLUCOSE_LABS = {
    "creatinine": (ITEM_CREATININE, {"mg/dl": 1.0, "": 1.0, "umol/l": 1.0 / UMOL_L_PER_MG_DL, "µmol/l": 1.0 / UMOL_L_PER_MG_DL}, "mg/dL"),
    "hba1c": (ITEM_HBA1C, {"%": 1.0, "": 1.0}, "%"),
    "uacr": (ITEM_UACR, {"mg/g": 1.0, "mg/g creat": 1.0, "": 1.0, "mg/mmol": 8.84}, "mg/g"),
}
CREATININE_RANGE = (0.1, 25.0)  # mg/dL


def kidney_and_glucose(records: pd.DataFrame, labs: pd.DataFrame | None, demo: pd.DataFrame, path: Path | None,
                       window: pd.Timedelta) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """egfr (CKD-EPI 2021 from the creatinine nearest before the ECG, at the ECG's age and sex),
    hba1c (%), uacr (mg/g), with src_ columns naming the lab row."""
    out = pd.DataFrame({"egfr": np.nan, "hba1c": np.nan, "uacr": np.nan, "src_egfr": "", "src_hba1c": "", "src_uacr": ""}, index=records.index)
    if labs is None or path is None:
        return out, []
    problems = []
    for field, (item, factors, unit_name) in KIDNEY_GLUCOSE_LABS.items():
        rows = labs[labs["itemid"] == item]
        value, unit, raw = _lab_value(rows)
        converted = value * unit.map(factors).astype(float)
        lo, hi = CREATININE_RANGE if field == "creatinine" else RANGES[field]
        for bad, message in ((value.isna(), "lab value not a number"),
                             (value.notna() & converted.isna(), f"unknown unit (expected {unit_name})"),
                             (converted.notna() & ((converted < lo) | (converted > hi)), f"outside {lo:g}-{hi:g} {unit_name}")):
            if bad.any():
                problems.append(_problem(rows[bad], field, raw[bad], path.name, message))
        keep = converted.notna() & (converted >= lo) & (converted <= hi)
        events = pd.DataFrame({"subject_id": rows.loc[keep, "subject_id"], "time": pd.to_datetime(rows.loc[keep, "charttime"], errors="coerce"),
                               field: converted[keep]})
        hit = nearest_before(records, events, window)
        when = hit["time"].dt.strftime("%Y-%m-%d %H:%M").fillna("")
        if field == "creatinine":
            age = pd.to_numeric(demo["age"], errors="coerce").to_numpy(dtype=float)
            male = (demo["sex"] == "male").to_numpy()
            known_sex = demo["sex"].isin(["male", "female"]).to_numpy()
            egfr = np.where(known_sex, ckd_epi_2021(hit["creatinine"].to_numpy(dtype=float), age, male), np.nan)
            out["egfr"] = egfr
            out["src_egfr"] = np.where(np.isfinite(egfr), f"CKD-EPI 2021 of labevents {item} creatinine "
                                       + hit["creatinine"].map(lambda v: f"{v:g}").astype(str) + " mg/dL " + when, "")
        else:
            out[field] = hit[field].to_numpy(dtype=float)
            out[f"src_{field}"] = np.where(hit[field].notna(), f"labevents {item} " + when, "")
    return out, problems


def _drug_class(drug: pd.Series, names: tuple[str, ...]) -> pd.Series:
    text = drug.fillna("").astype(str).str.lower()
    return text.str.contains("|".join(names), regex=True)


def medications(records: pd.DataFrame, hosp: Path, settings: MetadataConfig) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """bp_treated and statin from prescriptions started within ``window_days`` before the ECG."""
    out = pd.DataFrame({"bp_treated": np.nan, "statin": np.nan, "src_bp_treated": "", "src_statin": ""}, index=records.index)
    path = find_table(hosp, "prescriptions")
    if path is None:
        return out, [_missing_table(hosp, "prescriptions", "bp_treated and statin")]
    rx = pd.read_csv(path, usecols=["subject_id", "starttime", "drug"], dtype={"drug": str})
    rx["subject_id"] = pd.to_numeric(rx["subject_id"], errors="coerce").astype("Int64")
    rx = rx[rx["subject_id"].isin(records["subject_id"].dropna().unique())]
    events = pd.DataFrame({"subject_id": rx["subject_id"], "time": pd.to_datetime(rx["starttime"], errors="coerce"), "any": 1,
                           "bp_treated": _drug_class(rx["drug"], ANTIHYPERTENSIVES).astype(int),
                           "statin": _drug_class(rx["drug"], STATINS).astype(int)}).dropna(subset=["time"])
    window = pd.Timedelta(days=settings.window_days)
    n_any = _window_count(records, events, "any", window)
    absent = 0.0 if settings.absent_code_is_negative else np.nan
    for field in ("bp_treated", "statin"):
        n_class = _window_count(records, events, field, window)
        out[field] = np.where(n_class > 0, 1.0, np.where(n_any > 0, absent, np.nan))
        out[f"src_{field}"] = np.where(n_class > 0, "prescriptions",
                                       np.where((n_any > 0) & settings.absent_code_is_negative, "prescriptions without one", ""))
    return out, []


def diabetes_onset_age(records: pd.DataFrame, events: pd.DataFrame, age: pd.Series, diabetes: np.ndarray) -> pd.DataFrame:
    """diabetes_age: age at the subject's first diabetes-coded admission at or before the ECG
    (an upper bound of the age at diagnosis), where diabetes is 1."""
    coded = events[events["diabetes"] > 0].sort_values("time", kind="stable").groupby("subject_id", as_index=False)["time"].first()
    first = records[["subject_id"]].merge(coded, on="subject_id", how="left")["time"]
    years_before = (records["ecg_time"] - first.set_axis(records.index)).dt.days / 365.25
    onset = np.floor(pd.to_numeric(age, errors="coerce").to_numpy(dtype=float) - years_before.to_numpy(dtype=float))
    use = (diabetes == 1.0) & np.isfinite(onset) & (years_before.to_numpy(dtype=float) >= 0)
    src = np.where(use, "first diabetes code " + first.dt.strftime("%Y-%m-%d").fillna("").to_numpy() + " (upper bound of onset)", "")
    return pd.DataFrame({"diabetes_age": np.where(use, onset, np.nan), "src_diabetes_age": src}, index=records.index)


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
    window = pd.Timedelta(days=settings.window_days)
    say("omr: systolic blood pressure and BMI")
    omr, omr_path = _read_omr(hosp, records)
    bp, p = blood_pressure(records, hosp, window, omr, omr_path)
    problems += p
    bmi, p = body_mass_index(records, omr, omr_path, window)
    problems += p
    say("labevents: total and HDL cholesterol, creatinine, HbA1c, urine albumin/creatinine")
    lab_path = find_table(hosp, "labevents")
    labs = _read_labs(lab_path, records["subject_id"].dropna().unique(), progress) if lab_path is not None else None
    lipid, p = lipids(records, hosp, window, progress, labs)
    problems += p
    kidney, p = kidney_and_glucose(records, labs, demo, lab_path, window)
    problems += p
    say("admissions, diagnoses_icd: diabetes and smoking codes")
    dx, p = diagnoses(records, hosp, settings)
    problems += p
    onset = (diabetes_onset_age(records, dx.attrs["events"], demo["age"], dx["diabetes"].to_numpy(dtype=float))
             if "events" in dx.attrs else pd.DataFrame({"diabetes_age": np.nan, "src_diabetes_age": ""}, index=records.index))
    say("prescriptions: antihypertensive and statin use")
    meds, p = medications(records, hosp, settings)
    problems += p
    dx.attrs.clear()
    values = pd.concat([records.assign(subject_id=records["subject_id"].astype(str).replace("<NA>", "")), demo, bp, lipid, dx,
                        bmi, kidney, meds, onset], axis=1)
    values.loc[values["subject_id"] == "", "subject_id"] = values["record_id"]
    problem_frame = pd.concat(problems, ignore_index=True) if problems else None
    return finalize(values, problem_frame, settings, kind="mimic", extra_reasons=capped_reason)
