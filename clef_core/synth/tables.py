"""MIMIC-IV hosp tables (patients, admissions, omr, labevents, diagnoses_icd, prescriptions) from the truth.

What reaches the tables, and when, is what a SCORE2 extractor must untangle:
  * BP (omr "Blood Pressure", "sbp/dbp") is on file for a site-dependent share of patients,
    lipids (labevents 50907 total cholesterol, 50904 HDL, mg/dL) for a minority.
  * The reading nearest before the first ECG and inside ``window_days`` carries the true
    value exactly; older in-window readings, readings after the last ECG and readings older
    than the window carry other values, so an extractor that ignores time gets it wrong.
  * Diabetes and smoking exist only as ICD codes of admissions (ICD-9 before the real-time
    switch of October 2015, ICD-10 after; dots removed as in MIMIC), coded with a site's
    sensitivity; patients never admitted have no diagnoses. Decoys: diabetes first coded
    after the ECG, former smokers with only old smoking codes or a history-of code.
  * PREVENT inputs (a random stream of their own, so the rows above do not change): a kidney /
    glucose panel hours before the first ECG carries the true creatinine (50912; eGFR by CKD-EPI
    2021), HbA1c (50852, %) and urine albumin/creatinine (51070, mg/g), each on file with its own
    chance; prescriptions (antihypertensive / statin by generic name, among filler drugs) start
    before the first ECG for treated patients with a pharmacy record; decoys: a statin started
    after the last ECG, a creatinine after the last ECG.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clef_core.synth.clinical import ClinicalCohort
from clef_core.synth.risk_link import complete_flags

DAY = np.timedelta64(86400, "s")
ICD10_SWITCH = np.datetime64("2015-10-01T00:00:00")
ITEM_TCHOL, ITEM_HDL, ITEM_LDL, ITEM_TG, ITEM_CREAT = 50907, 50904, 50905, 51000, 50912
ITEM_HBA1C, ITEM_UACR = 50852, 51070
ANTIHYPERTENSIVE_DRUGS = ("Lisinopril", "Amlodipine", "Metoprolol Tartrate", "Hydrochlorothiazide", "Losartan Potassium", "Carvedilol")
STATIN_DRUGS = ("Atorvastatin", "Simvastatin", "Rosuvastatin Calcium", "Pravastatin")
FILLER_DRUGS = ("Acetaminophen", "Heparin", "Docusate Sodium", "Senna", "Pantoprazole", "Ondansetron", "Insulin")

CODES = {  # name -> (ICD-9 codes, ICD-10 codes), without dots
    "diabetes": (("25000", "25002", "25040", "25060"), ("E119", "E1165", "E1122", "E118", "E1140")),
    "smoking": (("3051",), ("F17210", "F17200", "Z720")),
    "former_smoker": (("V1582",), ("Z87891",)),
    "hypertension": (("4019",), ("I10",)),
    "hyperlipidemia": (("2724",), ("E785",)),
    "af": (("42731",), ("I4891",)),
    "filler": (
        ("5849", "486", "53081", "311", "2449", "41401", "4280", "5990", "2859", "V5861"),
        ("N179", "J189", "K219", "F329", "E039", "I2510", "I509", "N390", "D649", "Z7901"),
    ),
}
ADMISSION_TYPES = ("EW EMER.", "URGENT", "ELECTIVE", "OBSERVATION ADMIT", "DIRECT EMER.")


def _fmt_dt(values: list) -> np.ndarray:
    return np.char.replace(np.datetime_as_string(np.array(values, dtype="datetime64[s]"), unit="s"), "T", " ")


def _fmt_date(values: list) -> np.ndarray:
    return np.datetime_as_string(np.array(values, dtype="datetime64[s]"), unit="D")


class _Builder:
    """Accumulates the rows of every table while walking through the subjects."""

    def __init__(self, cohort: ClinicalCohort, window_days: int, diagnosis_window_days: int):
        self.cohort = cohort
        self.window = window_days
        self.dx_window = diagnosis_window_days
        self.rng = np.random.default_rng([cohort.seed, 0x7AB])
        self.adm: list[tuple] = []
        self.dx: list[tuple] = []
        self.omr: list[tuple] = []
        self.lab: list[tuple] = []
        self.hadm_ids = iter(20_000_000 + self.rng.choice(10_000_000, size=8 * len(cohort.subjects) + 8, replace=False))
        self.specimens = iter(self.rng.choice(90_000_000, size=4 * 3 * len(cohort.subjects) + 8, replace=False) + 10_000_000)
        self.rng_cm = np.random.default_rng([cohort.seed, 0xCAE])  # the PREVENT inputs' own stream
        self.cm_specimens = iter(range(100_000_000, 100_000_000 + 4 * len(cohort.subjects) + 8))
        self.rx: list[tuple] = []

    def days(self, lo: float, hi: float) -> np.timedelta64:
        return np.timedelta64(int(self.rng.uniform(lo, hi) * 86400), "s")

    def icd(self, name: str, when: np.datetime64, year_shift: int) -> tuple[str, int]:
        real = when - np.timedelta64(int(year_shift * 365.2425 * 86400), "s")
        version = 10 if real >= ICD10_SWITCH else 9
        options = CODES[name][version == 10]
        return options[self.rng.integers(len(options))], version

    # --- admissions and diagnoses -------------------------------------------------------
    def admissions(self, s: pd.Series, prof, t0: np.datetime64, t_last: np.datetime64, complete: bool | None = None) -> np.datetime64:
        """``complete`` True forces a stay during the index ECG (synth.risk_coverage); the draws
        are made either way, so the other patients' tables do not change."""
        rng = self.rng
        if rng.random() >= prof.p_admitted and not complete:
            return t_last
        stays = []
        if rng.random() < 0.35 or complete:  # the ECG was taken during a stay
            start = t0 - self.days(0.1, 3)
            stays.append((start, t0 + self.days(0.5, 8)))
        for _ in range(1 + min(rng.poisson(1.2), 5)):
            start = t0 - self.days(2, 1.3 * self.dx_window) if rng.random() < 0.7 else t_last + self.days(1, 700)
            stays.append((start, start + self.days(0.5, 12)))
        stays.sort()
        shift = int(s.anchor_year - s.real_anchor_year)
        for admit, disch in stays:
            hadm = int(next(self.hadm_ids))
            self.adm.append((s.subject_id, hadm, admit, disch, ADMISSION_TYPES[rng.integers(len(ADMISSION_TYPES))]))
            coded = set()
            for name in self._diagnoses(s, prof, admit, t0, t_last):
                code, version = self.icd(name, admit, shift)
                if code not in coded:
                    coded.add(code)
                    self.dx.append((s.subject_id, hadm, code, version))
        return max(t_last, stays[-1][1])

    def _diagnoses(self, s: pd.Series, prof, admit: np.datetime64, t0: np.datetime64, t_last: np.datetime64) -> list[str]:
        rng = self.rng
        names = []
        after = admit > t_last
        if s.diabetes and rng.random() < prof.p_code_diabetes:
            names.append("diabetes")
        if s.later_diabetes and after and rng.random() < prof.p_code_diabetes:
            names.append("diabetes")
        if s.smoking and rng.random() < prof.p_code_smoking:
            names.append("smoking")
        if s.former_smoker:
            too_old = admit < t0 - self.dx_window * DAY
            if too_old and rng.random() < 0.5:
                names.append("smoking")
            elif rng.random() < 0.4:
                names.append("former_smoker")
        if s.sbp >= 140 and rng.random() < 0.6:
            names.append("hypertension")
        if s.total_chol > 6.2 and rng.random() < 0.5:
            names.append("hyperlipidemia")
        if s.af_type and rng.random() < 0.8:
            names.append("af")
        names += ["filler"] * int(rng.integers(1, 5))
        order = rng.permutation(len(names))
        return [names[i] for i in order]

    # --- omr blood pressure (and BMI) -----------------------------------------------------
    def _bp(self, sbp: float) -> str:
        dbp = int(np.clip(round(0.55 * sbp + 8 + self.rng.normal(0, 6)), 40, 130))
        return f"{int(sbp)}/{dbp}"

    def _other(self, true: float, lo: float, hi: float) -> float:
        return true + self.rng.choice((-1, 1)) * self.rng.uniform(lo, hi)

    def blood_pressure(self, s: pd.Series, prof, t0: np.datetime64, t_last: np.datetime64, complete: bool | None = None) -> bool:
        rng = self.rng
        on_file = rng.random() < prof.p_bp or bool(complete)
        rows = []
        if on_file:
            when = t0 - self.days(1, 0.8 * self.window)
            rows.append((when, s.sbp))
            rows.append((when, None))  # a BMI reading the same visit
            if rng.random() < 0.3:  # an older reading, still in the window
                rows.append((when - self.days(1, 0.2 * self.window), np.clip(self._other(s.sbp, 8, 25), 80, 230)))
        if rng.random() < prof.p_decoy:
            rows.append((t_last + self.days(1, 400), np.clip(self._other(s.sbp, 10, 30), 80, 230)))
        if rng.random() < prof.p_decoy:
            rows.append((t0 - (self.window + 10) * DAY - self.days(0, 1500), np.clip(self._other(s.sbp, 10, 30), 80, 230)))
        for when, sbp in rows:
            if sbp is None:
                self.omr.append((s.subject_id, when, 1, "BMI (kg/m2)", f"{s.bmi:.1f}"))
            else:
                self.omr.append((s.subject_id, when, 1, "Blood Pressure", self._bp(round(sbp))))
        return on_file

    # --- lipid panels ------------------------------------------------------------------------
    def _panel(self, subject: int, when: np.datetime64, tc: int, hdl: int) -> None:
        tg = int(np.clip(round(self.rng.lognormal(np.log(130), 0.4)), 30, 900))
        ldl = tc - hdl - tg // 5  # Friedewald
        specimen = int(next(self.specimens))
        for item, value in ((ITEM_TCHOL, tc), (ITEM_HDL, hdl), (ITEM_TG, tg), (ITEM_LDL, ldl)):
            self.lab.append((subject, specimen, item, when, str(value), float(value), "mg/dL"))
        creat = round(float(self.rng.lognormal(0, 0.25)), 1)
        self.lab.append((subject, int(next(self.specimens)), ITEM_CREAT, when, str(creat), creat, "mg/dL"))

    def lipids(self, s: pd.Series, prof, t0: np.datetime64, t_last: np.datetime64, complete: bool | None = None) -> bool:
        """``complete`` True / False forces the index panel on / off file (None: the site's habit)."""
        rng = self.rng
        on_file = rng.random() < prof.p_lab
        on_file = on_file if complete is None else bool(complete)
        tc, hdl = int(s.total_chol_mgdl), int(s.hdl_mgdl)

        def other() -> tuple[int, int]:
            return int(np.clip(round(tc * rng.uniform(1.15, 1.4) ** rng.choice((-1, 1))), 80, 400)), int(
                np.clip(round(hdl * rng.uniform(1.15, 1.4) ** rng.choice((-1, 1))), 15, 130)
            )

        if on_file:
            when = t0 - self.days(0.5, 0.8 * self.window)
            self._panel(s.subject_id, when, tc, hdl)
            if rng.random() < 0.25:
                self._panel(s.subject_id, when - self.days(1, 0.2 * self.window), *other())
        if rng.random() < prof.p_decoy:
            self._panel(s.subject_id, t_last + self.days(1, 400), *other())
        if rng.random() < prof.p_decoy:
            self._panel(s.subject_id, t0 - (self.window + 10) * DAY - self.days(0, 1500), *other())
        return on_file


    # --- kidney / glucose panel and prescriptions (PREVENT, PCE, SCORE2-Diabetes inputs) -------
    def cardiometabolic(self, s, t0: np.datetime64, t_last: np.datetime64, complete: bool | None = None) -> None:
        rng = self.rng_cm
        when = t0 - np.timedelta64(int(rng.uniform(0.05, 0.45) * 86400), "s")  # later than any lipid panel
        dm = bool(s.diabetes)
        for item, value, unit, p in ((ITEM_CREAT, s.creatinine, "mg/dL", 0.85), (ITEM_HBA1C, s.hba1c, "%", 0.8 if dm else 0.3),
                                     (ITEM_UACR, s.uacr, "mg/g", 0.35 if dm else 0.08)):
            on_file = rng.random() < p or (bool(complete) and item == ITEM_CREAT)
            if on_file:
                self.lab.append((s.subject_id, next(self.cm_specimens), item, when, f"{value:g}", float(value), unit))
        if rng.random() < 0.2:  # decoy: a creatinine after the last ECG
            later = t_last + np.timedelta64(int(rng.uniform(1, 400) * 86400), "s")
            self.lab.append((s.subject_id, next(self.cm_specimens), ITEM_CREAT, later, f"{2 * s.creatinine:g}", float(2 * s.creatinine), "mg/dL"))
        if rng.random() < 0.75 or bool(complete):  # a pharmacy record before the first ECG
            start = t0 - np.timedelta64(int(rng.uniform(1, 0.8 * self.window) * 86400), "s")
            drugs = [FILLER_DRUGS[i] for i in rng.choice(len(FILLER_DRUGS), size=int(rng.integers(1, 4)), replace=False)]
            if s.bp_treated and rng.random() < 0.9:
                drugs.append(ANTIHYPERTENSIVE_DRUGS[rng.integers(len(ANTIHYPERTENSIVE_DRUGS))])
            if s.statin and rng.random() < 0.9:
                drugs.append(STATIN_DRUGS[rng.integers(len(STATIN_DRUGS))])
            for drug in drugs:
                self.rx.append((s.subject_id, start, start + np.timedelta64(int(rng.uniform(1, 30) * 86400), "s"), drug))
        if not s.statin and rng.random() < 0.1:  # decoy: a statin started after the last ECG
            later = t_last + np.timedelta64(int(rng.uniform(1, 400) * 86400), "s")
            self.rx.append((s.subject_id, later, later + np.timedelta64(30 * 86400, "s"), STATIN_DRUGS[0]))


def build_hosp_tables(cohort: ClinicalCohort, *, window_days: int = 365, diagnosis_window_days: int = 3650) -> dict[str, pd.DataFrame]:
    """The six hosp tables; also adds ``bp_on_file``, ``labs_on_file``, ``admitted`` to the truth."""
    b = _Builder(cohort, window_days, diagnosis_window_days)
    rec = cohort.records.groupby("subject_id")["ecg_time"].agg(["min", "max"])
    subjects = cohort.subjects
    flags = np.zeros((len(subjects), 2), dtype=int)
    dod, admitted = [], []
    complete = complete_flags(len(subjects), cohort.link, cohort.seed)
    for i, s in enumerate(subjects.itertuples(index=False)):
        prof = cohort.sites[s.site]
        t0 = np.datetime64(rec.at[s.subject_id, "min"], "s")
        t_last = np.datetime64(rec.at[s.subject_id, "max"], "s")
        n_adm_before = len(b.adm)
        forced = None if complete is None else bool(complete[i])
        last_seen = b.admissions(s, prof, t0, t_last, forced)
        flags[i] = b.blood_pressure(s, prof, t0, t_last, forced), b.lipids(s, prof, t0, t_last, forced)
        b.cardiometabolic(s, t0, t_last, forced)
        dies = b.rng.random() < 0.03 + 0.5 * s.risk_latent
        dod.append(last_seen + b.days(30, 1500) if dies else None)
        admitted.append(int(len(b.adm) > n_adm_before))
    subjects["admitted"] = admitted
    subjects["bp_on_file"], subjects["labs_on_file"] = flags[:, 0], flags[:, 1]

    age = subjects["anchor_age_true"].to_numpy()
    patients = pd.DataFrame(
        {
            "subject_id": subjects["subject_id"],
            "gender": np.where(subjects["sex"] == "male", "M", "F"),
            "anchor_age": np.where(age > 89, 91, age),  # MIMIC reports every age over 89 as 91
            "anchor_year": subjects["anchor_year"],
            "anchor_year_group": subjects["anchor_year_group"],
            "dod": [("" if d is None else str(np.datetime_as_string(np.datetime64(d, "s"), unit="D"))) for d in dod],
        }
    )
    return {
        "patients": patients,
        "admissions": _admissions_frame(b.adm),
        "omr": _omr_frame(b.omr),
        "labevents": _lab_frame(b.lab),
        "diagnoses_icd": _dx_frame(b.dx),
        "prescriptions": _rx_frame(b.rx),
    }


def _admissions_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["subject_id", "hadm_id", "admittime", "dischtime", "admission_type"])
    df = df.sort_values(["subject_id", "admittime"], kind="stable")
    df["admittime"], df["dischtime"] = _fmt_dt(list(df["admittime"])), _fmt_dt(list(df["dischtime"]))
    df.insert(4, "deathtime", "")
    df["hospital_expire_flag"] = 0
    return df.reset_index(drop=True)


def _dx_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["subject_id", "hadm_id", "icd_code", "icd_version"])
    df.insert(2, "seq_num", df.groupby("hadm_id").cumcount() + 1)
    return df


def _rx_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["subject_id", "starttime", "stoptime", "drug"])
    df = df.sort_values(["subject_id", "starttime", "drug"], kind="stable").reset_index(drop=True)
    df["starttime"], df["stoptime"] = _fmt_dt(list(df["starttime"])), _fmt_dt(list(df["stoptime"]))
    df.insert(1, "hadm_id", pd.array([pd.NA] * len(df), dtype="Int64"))
    df.insert(4, "drug_type", "MAIN")
    df["route"] = "PO"
    return df


def _omr_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["subject_id", "chartdate", "seq_num", "result_name", "result_value"])
    df = df.sort_values(["subject_id", "chartdate", "result_name"], kind="stable").reset_index(drop=True)
    df["chartdate"] = _fmt_date(list(df["chartdate"]))
    df["seq_num"] = df.groupby(["subject_id", "chartdate", "result_name"]).cumcount() + 1
    return df


def _lab_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["subject_id", "specimen_id", "itemid", "charttime", "value", "valuenum", "valueuom"])
    df = df.sort_values(["subject_id", "charttime", "itemid"], kind="stable").reset_index(drop=True)
    df["charttime"] = _fmt_dt(list(df["charttime"]))
    df.insert(0, "labevent_id", np.arange(1, len(df) + 1))
    df.insert(2, "hadm_id", pd.array([pd.NA] * len(df), dtype="Int64"))  # outpatient panels
    return df
