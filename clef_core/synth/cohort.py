"""Generate a complete synthetic MIMIC-IV-ECG-layout cohort (see docs/synthetic-cohort.md)."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clef_core.config import require
import numpy as np
import pandas as pd

from clef_core.synth.beats import FS, LEADS, N_SAMPLES
from clef_core.synth.clinical import ClinicalCohort, draw_clinical
from clef_core.synth.risk import REGIONS
from clef_core.synth.risk_link import RISK_LABELS, RiskLink
from clef_core.synth.signals import record_frame, render_frame
from clef_core.synth.hospital_profiles import make_sites
from clef_core.synth.tables import build_hosp_tables
from clef_core.synth.writer import GAIN, format_times, record_path, write_csv, write_records

GENERATOR_VERSION = "1.0"
BATCH = 64  # records rendered at once (memory ~ BATCH * 0.6 MB)
LABELS = {
    "af": "atrial fibrillation in this ECG (irregular RR, no P waves, f-waves)",
    "lvh": "left ventricular hypertrophy: hidden LV mass index > 118 g/m2 (voltage rises continuously with it)",
    "high_risk": "true SCORE2/SCORE2-OP at the age of this ECG >= 7.5 % (<50 y), 10 % (50-69 y), 15 % (>=70 y); empty outside 40-89 y",
    "conduction": "bundle branch block (RBBB or LBBB), QRS >= 125 ms",
    "st_dep": "ischaemic ST depression in the lateral leads (0.06-0.16 mV on top of a risk-graded shift)",
}


@dataclass(frozen=True)
class SynthConfig(RiskLink):
    """The ``[synth]`` config section: the cohort's size and shape, plus the risk / site links of
    :class:`~clef_core.synth.risk_link.RiskLink` (whose defaults keep the default cohort)."""

    patients: int = 300
    sites: int = 3
    seed: int = 0
    records_per_patient: tuple[int, int] = (1, 3)
    region: str = "low"
    carts_per_site: tuple[int, int] = (2, 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "records_per_patient", tuple(int(v) for v in self.records_per_patient))
        object.__setattr__(self, "carts_per_site", tuple(int(v) for v in self.carts_per_site))
        for name in ("records_per_patient", "carts_per_site"):
            pair = list(getattr(self, name))
            require(len(pair) == 2 and 1 <= pair[0] <= pair[1], f"synth.{name}", pair, "a [min, max] pair, 1 <= min <= max")
        require(self.patients >= 1, "synth.patients", self.patients, ">= 1")
        require(self.sites >= 1, "synth.sites", self.sites, ">= 1")
        require(self.region in REGIONS, "synth.region", self.region, " | ".join(REGIONS))

    def as_kwargs(self) -> dict:
        return asdict(self)


@dataclass
class CohortSummary:
    out_dir: Path
    patients: int
    records: int
    seed: int
    seconds: float
    sites: list[dict] = field(default_factory=list)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")


def _prepare_out(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty (use overwrite)")
        if not (out_dir / "cohort.json").is_file():
            raise FileExistsError(f"{out_dir} is not a synthetic cohort (no cohort.json); refusing to overwrite it")
    tmp = out_dir.with_name(f".{out_dir.name}.synth-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _finish_out(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def _machine_measurements(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Cart measurements (ms, degrees) with the cart's own measurement error; P fields empty in AF."""
    rng = np.random.default_rng([seed, 0x33])
    n = len(frame)
    af = frame["af"].to_numpy(bool)
    hr = np.where(af, np.minimum(frame["hr"].to_numpy() * 1.15, 150), frame["hr"].to_numpy())
    qrs_on = np.round(200 + rng.normal(0, 4, n))
    p_on = qrs_on - np.round(frame["pr_ms"].to_numpy() + rng.normal(0, 6, n))
    qt = frame["qtc_ms"].to_numpy() * np.cbrt(60 / hr)

    def maybe(values: np.ndarray) -> pd.array:
        return pd.array(np.where(af, np.nan, values), dtype="Float64").round(0).astype("Int64")

    return pd.DataFrame(
        {
            "subject_id": frame["subject_id"].to_numpy(),
            "study_id": frame["study_id"].to_numpy(),
            "cart_id": frame["cart_id"].to_numpy(),
            "ecg_time": format_times(frame["ecg_time"]),
            "rr_interval": np.round(60000 / hr + rng.normal(0, 10, n)).astype(int),
            "p_onset": maybe(p_on),
            "p_end": maybe(p_on + 100 + np.round(rng.normal(0, 8, n))),
            "qrs_onset": qrs_on.astype(int),
            "qrs_end": np.round(qrs_on + frame["qrs_ms"].to_numpy() + rng.normal(0, 5, n)).astype(int),
            "t_end": np.round(qrs_on + qt + rng.normal(0, 10, n)).astype(int),
            "p_axis": maybe(55 + rng.normal(0, 15, n)),
            "qrs_axis": np.round(frame["axis_deg"].to_numpy() + rng.normal(0, 5, n)).astype(int),
            "t_axis": np.round(40 + rng.normal(0, 20, n)).astype(int),
        }
    )


def label_names(records: pd.DataFrame) -> dict[str, str]:
    """The labels of a cohort: :data:`LABELS`, plus ``cvd_event`` when ``synth.risk_labels``."""
    return {**LABELS, **{k: v for k, v in RISK_LABELS.items() if k in records.columns}}


def _labels(records: pd.DataFrame) -> pd.DataFrame:
    out = records[["study_id", "subject_id"]].copy()
    for name in label_names(records):
        out[name] = pd.array(records[name].to_numpy(), dtype="Float64").astype("Int64")
    return out


def _truth(subjects: pd.DataFrame) -> pd.DataFrame:
    t = subjects.rename(columns={"score2": "risk"}).copy()
    t["index_ecg_time"] = format_times(t["index_ecg_time"])
    first = ["subject_id", "site", "index_study_id", "index_ecg_time", "age", "sex", "sbp", "total_chol", "hdl", "smoking", "diabetes", "risk"]
    return t[first + [c for c in t.columns if c not in first]]


def _site_summary(cohort: ClinicalCohort) -> list[dict]:
    subj, rec = cohort.subjects, cohort.records
    out = []
    for prof in cohort.sites:
        s = subj[subj["site"] == prof.site]
        r = rec[rec["site"] == prof.site]
        info = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in prof.as_dict().items()}
        info["cart_ids"] = list(prof.cart_ids)
        info["cart_gains"] = [round(g, 4) for g in prof.cart_gains]
        info.update(
            patients=int(len(s)),
            records=int(len(r)),
            mean_age=round(float(s["age"].mean()), 2) if len(s) else None,
            male_frac=round(float((s["sex"] == "male").mean()), 4) if len(s) else None,
            score2_defined=round(float(s["score2"].notna().mean()), 4) if len(s) else None,
            bp_on_file=round(float(s["bp_on_file"].mean()), 4) if len(s) else None,
            labs_on_file=round(float(s["labs_on_file"].mean()), 4) if len(s) else None,
            admitted=round(float(s["admitted"].mean()), 4) if len(s) else None,
            prevalence={k: round(float(r[k].mean()), 4) if len(r) else None for k in label_names(rec)},
        )
        out.append(info)
    return out


def generate_cohort(
    out_dir: str | Path,
    patients: int,
    sites: int,
    seed: int,
    *,
    records_per_patient: tuple[int, int] = (1, 3),
    region: str = "low",
    carts_per_site: tuple[int, int] = (2, 4),
    window_days: int = 365,
    diagnosis_window_days: int = 3650,
    overwrite: bool = False,
    progress: bool = False,
    **link_knobs: float | bool,
) -> CohortSummary:
    """Write a synthetic cohort in the MIMIC-IV-ECG + hosp layout to ``out_dir``.

    Built in a hidden sibling folder and moved into place at the end, so an interrupted run
    never leaves a half-written cohort. ``window_days`` / ``diagnosis_window_days`` should be
    the extractor's ``[metadata]`` windows: they decide which hosp rows are in/out of time.
    """
    t_start = time.perf_counter()
    unknown = set(link_knobs) - set(RiskLink.__dataclass_fields__)
    if unknown:
        raise TypeError(f"generate_cohort: unknown argument(s) {sorted(unknown)}")
    link = SynthConfig(patients=patients, sites=sites, seed=seed, records_per_patient=records_per_patient, region=region,
                       carts_per_site=carts_per_site, **link_knobs).link()  # validates
    out_dir = Path(out_dir)
    tmp = _prepare_out(out_dir, overwrite)
    cohort = draw_clinical(
        patients, make_sites(sites, seed, tuple(carts_per_site)), seed, records_per_patient=tuple(records_per_patient), region=region,
        link=link,
    )
    tables = build_hosp_tables(cohort, window_days=window_days, diagnosis_window_days=diagnosis_window_days)
    frame = record_frame(cohort)
    batches = range(0, len(frame), BATCH)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="synth records", unit="batch")
    # File creation is syscall-bound and releases the GIL: write in a thread while the next batch renders.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[Future] = []
        for start in batches:
            part = frame.iloc[start : start + BATCH]
            pending.append(pool.submit(write_records, tmp, part, render_frame(part, seed)))
            while len(pending) > 2:
                pending.pop(0).result()
        for fut in pending:
            fut.result()

    rec = cohort.records
    paths = [record_path(s, t) for s, t in zip(rec["subject_id"], rec["study_id"])]
    record_list = pd.DataFrame(
        {
            "subject_id": rec["subject_id"],
            "study_id": rec["study_id"],
            "file_name": [p.rsplit("/", 1)[1] for p in paths],
            "ecg_time": format_times(rec["ecg_time"]),
            "path": paths,
        }
    )
    write_csv(tmp / "record_list.csv", record_list)
    write_csv(tmp / "machine_measurements.csv", _machine_measurements(frame, seed))
    (tmp / "hosp").mkdir()
    for name, table in tables.items():
        write_csv(tmp / "hosp" / f"{name}.csv.gz", table)
    write_csv(tmp / "labels.csv", _labels(rec))
    write_csv(tmp / "truth.csv", _truth(cohort.subjects))
    site_info = _site_summary(cohort)
    meta = {
        "generator": "clef_core.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "args": {
            "patients": patients,
            "sites": sites,
            "records_per_patient": list(records_per_patient),
            "region": region,
            "carts_per_site": list(carts_per_site),
            "window_days": window_days,
            "diagnosis_window_days": diagnosis_window_days,
            **({} if link.is_default else link.as_dict()),
        },
        "layout": "mimic-iv-ecg",
        "sample_rate": FS,
        "n_samples": N_SAMPLES,
        "leads": list(LEADS),
        "gain_adu_per_mv": GAIN,
        "patients": int(len(cohort.subjects)),
        "records": int(len(rec)),
        "labels": label_names(rec),
        "sites": site_info,
    }
    if not link.is_default:
        meta["risk_link"] = _link_summary(cohort)
    (tmp / "cohort.json").write_text(json.dumps(meta, indent=2) + "\n")
    _finish_out(tmp, out_dir)
    return CohortSummary(out_dir, len(cohort.subjects), len(rec), seed, time.perf_counter() - t_start, site_info)


def _link_summary(cohort: ClinicalCohort) -> dict:
    """What the risk/site knobs produced: corr(h, age), corr(h, logit risk), label prevalence."""
    subj = cohort.subjects
    out: dict = {}
    if "risk_factor" in subj:
        h = subj["risk_factor"].to_numpy(float)
        risk = subj["risk_latent"].to_numpy(float)
        out["corr_factor_age"] = round(float(np.corrcoef(h, subj["age"].to_numpy(float))[0, 1]), 4)
        out["corr_factor_logit_risk"] = round(float(np.corrcoef(h, np.log(risk / (1 - risk)))[0, 1]), 4)
    if "cvd_event" in subj:
        out["cvd_event_prevalence"] = round(float(subj["cvd_event"].mean()), 4)
    out["bp_labs_admission_on_file"] = round(float((subj["bp_on_file"] & subj["labs_on_file"] & subj["admitted"]).mean()), 4)
    return out
