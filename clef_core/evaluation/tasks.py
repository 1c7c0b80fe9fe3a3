"""Labelled downstream tasks as arrays: windows ``x`` (N, T) z-scored, targets ``y``, groups.

* synthetic: the synthetic cohort's ``labels.csv`` (af, lvh, high_risk, conduction, st_dep; one
  row per ECG, NaN where undefined, e.g. high_risk outside SCORE2's 40-89 years), one window per
  record, grouped by subject.
* snomed: SNOMED CT Dx codes of a folder of CinC-2021 WFDB records (header ``# Dx:``), each code
  with at least ``min_per_class`` positives and negatives as a binary label; plus age (regression)
  from ``# Age:``. Grouped by record (one record per patient there).
* mitdb: MIT-BIH beats in the AAMI classes (:mod:`clef_core.evaluation.mitdb`), grouped by record.
* mitdb_af: MIT-BIH AF per back-to-back 10 s MLII window (:mod:`clef_core.evaluation.mitdb_rhythm`),
  binary label ``af``, grouped by record.
* mitdb_windows: MIT-BIH 10 s MLII windows with window labels any_pvc, any_sveb, af
  (:mod:`clef_core.evaluation.mitdb_windows`), grouped by record.
* evidence inputs: one window per patient (the index ECG) with risks, age and sex.

Every MIT-BIH task takes an optional list of test records (another folder, e.g. DS2): the probe is
then fitted on the training records and scored on those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clef_core.data.datasets import LabelledWindows
from clef_core.data.preprocess import PreprocessConfig, zscore
from clef_core.evaluation.mitdb import AAMI_CLASSES, check_disjoint, load_beats
from clef_core.evaluation.mitdb_rhythm import load_af_windows
from clef_core.evaluation.mitdb_windows import WINDOW_LABELS, load_windows

ID_COLUMNS = ("study_id", "subject_id", "record_id")


@dataclasses.dataclass
class TaskData:
    """One task: ``kind`` binary (``y`` (N, C) 0/1/NaN), multiclass (``y`` (N,) int) or regression
    (``y`` (N, C)); ``test`` is an explicit test set (same task) or None (then cross-validated)."""

    name: str
    kind: str
    labels: list[str]
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    lead: str
    test: TaskData | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


def synthetic_task(site: Any, lead: str, labels: Sequence[str] | None = None) -> TaskData:
    """The cohort's labels.csv as one multi-label binary task (``site`` a PreparedSite)."""
    table = site.labels
    if table is None:
        raise ValueError(f"{site.root}: no labels.csv (the synthetic task needs the synthetic cohort's labels)")
    columns = list(labels) if labels else [c for c in table.columns if c not in ID_COLUMNS]
    windows = LabelledWindows(site.store, table, columns, lead=lead, first_window_only=True)
    x, y, groups = windows.to_numpy()
    return TaskData("synthetic", "binary", columns, x, y, groups, lead,
                    info={"records": len(y), "subjects": int(len(np.unique(groups))),
                          "records_lead_absent": windows.n_lead_absent,
                          "positives": {c: int(np.nansum(y[:, j])) for j, c in enumerate(columns)},
                          "known": {c: int(np.isfinite(y[:, j]).sum()) for j, c in enumerate(columns)}})


def dx_labels(clinical: pd.DataFrame, min_per_class: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """One 0/1 column per SNOMED code in ``clinical["dx"]`` with at least ``min_per_class``
    positives and negatives (keyed by record_id), and every code's positive count."""
    if "dx" not in clinical.columns:
        raise ValueError("clinical table has no 'dx' column (not a folder of CinC-style WFDB records?)")
    codes = clinical["dx"].fillna("").astype(str).map(lambda s: {c.strip() for c in s.split(",") if c.strip()})
    counts = pd.Series([c for s in codes for c in s], dtype=str).value_counts()
    n = len(clinical)
    chosen = sorted(c for c, k in counts.items() if k >= min_per_class and n - k >= min_per_class)
    out = pd.DataFrame({"record_id": clinical["record_id"].astype(str).to_numpy()})
    for code in chosen:
        out[code] = codes.map(lambda s, code=code: float(code in s)).to_numpy()
    return out, {str(k): int(v) for k, v in counts.items()}


def snomed_tasks(site: Any, lead: str, min_per_class: int = 5) -> list[TaskData]:
    """``snomed_dx`` (binary, the frequent codes) and ``snomed_age`` (regression) of a WFDB folder."""
    clinical = site.clinical
    table, counts = dx_labels(clinical, min_per_class)
    tasks = []
    codes = [c for c in table.columns if c != "record_id"]
    if codes:
        w = LabelledWindows(site.store, table, codes, lead=lead, first_window_only=True)
        x, y, groups = w.to_numpy()
        tasks.append(TaskData("snomed_dx", "binary", codes, x, y, groups, lead,
                              info={"records": len(y), "code_counts": counts, "min_per_class": min_per_class,
                                    "caveat": "tiny real set (25 records): a smoke test, not a benchmark"}))
    ages = clinical[["record_id", "age"]].assign(age=pd.to_numeric(clinical["age"], errors="coerce")).dropna()
    if len(ages) >= 2 * min_per_class:
        w = LabelledWindows(site.store, ages, ["age"], lead=lead, first_window_only=True)
        x, y, groups = w.to_numpy()
        tasks.append(TaskData("snomed_age", "regression", ["age"], x, y, groups, lead,
                              info={"records": len(y), "caveat": "tiny real set: a smoke test"}))
    return tasks


def mitdb_task(train: Sequence[Path], test: Sequence[Path] | None, preprocess: PreprocessConfig,
               beats_per_class: int, seed: int = 0) -> TaskData:
    """AAMI beat classification (lead MLII), grouped by record; ``test`` records (e.g. DS2) make an
    explicit test set, otherwise the training records are cross-validated by record."""

    def load(paths: Sequence[Path], name: str) -> TaskData:
        beats = load_beats(paths, preprocess, "II", beats_per_class, seed)
        return TaskData(name, "multiclass", list(AAMI_CLASSES), zscore(beats.x), beats.y, beats.records, "II",
                        info={"records": sorted(beats.counts), "beats": int(len(beats.y)),
                              "beats_per_class_cap": beats_per_class, "per_record": beats.counts,
                              "class_counts": {c: int((beats.y == k).sum()) for k, c in enumerate(AAMI_CLASSES)}})

    return _with_test(load, train, test, "mitdb")


@dataclasses.dataclass
class EvidenceInputs:
    """One window per patient (its index ECG): ``x`` (N, T) z-scored, subject ids, the clinical
    table's risk at that ECG (policy-dependent, NaN when undefined), the hidden true risk when a
    ``truth.csv`` exists, age and sex (1 = male, NaN unknown)."""

    x: np.ndarray
    subjects: np.ndarray
    risk_clinical: np.ndarray
    risk_truth: np.ndarray | None
    age: np.ndarray
    male: np.ndarray
    lead: str


def evidence_inputs(site: Any, lead: str) -> EvidenceInputs:
    clinical = site.clinical.copy()
    clinical["record_id"] = clinical["record_id"].astype(str)
    clinical["subject_id"] = clinical["subject_id"].astype(str)
    truth_path = Path(site.root) / "truth.csv"
    truth = pd.read_csv(truth_path, dtype={"subject_id": str, "index_study_id": str}) if truth_path.is_file() else None
    if truth is not None and "index_study_id" in truth.columns:
        index_records = set(truth["index_study_id"].astype(str))
        rows = clinical[clinical["record_id"].isin(index_records)]
    else:  # the earliest ECG of each subject
        order = clinical.sort_values(["subject_id", "ecg_time", "record_id"], na_position="last", kind="stable")
        rows = order.drop_duplicates("subject_id")
    frame = pd.DataFrame({
        "record_id": rows["record_id"].to_numpy(),
        "risk": pd.to_numeric(rows["risk"], errors="coerce").to_numpy(),
        "age": pd.to_numeric(rows["age"], errors="coerce").to_numpy(),
        "male": rows["sex"].map({"male": 1.0, "female": 0.0}).astype(float).to_numpy(),
    })
    if truth is not None:
        frame["risk_truth"] = rows["subject_id"].map(truth.set_index("subject_id")["risk"]).astype(float).to_numpy()
    columns = [c for c in ("risk", "age", "male", "risk_truth") if c in frame.columns]
    w = LabelledWindows(site.store, frame, columns, lead=lead, first_window_only=True)
    x, y, groups = w.to_numpy()
    col = {c: y[:, j].astype(np.float64) for j, c in enumerate(columns)}
    return EvidenceInputs(x, groups, col["risk"], col.get("risk_truth"), col["age"], col["male"], lead)


def mitdb_af_task(records: Sequence[Path], preprocess: PreprocessConfig, per_class: int, seed: int = 0,
                  test: Sequence[Path] | None = None) -> TaskData:
    """AF vs non-AF 10 s MLII windows of MIT-BIH ``records`` (binary label ``af``), grouped by record;
    ``test`` records make an explicit test set, otherwise the records are cross-validated by record."""

    def load(paths: Sequence[Path], name: str) -> TaskData:
        w = load_af_windows(paths, preprocess, "II", per_class, seed)
        return TaskData(name, "binary", ["af"], w.x, w.af[:, None], w.records, "II",
                        info={"records": sorted(w.counts), "windows": int(len(w.af)), "af_windows": int(w.af.sum()),
                              "af_records": sorted(r for r, c in w.counts.items() if c["af_used"]),
                              "per_class_cap": per_class, "per_record": w.counts})

    return _with_test(load, records, test, "mitdb_af")


def mitdb_windows_task(records: Sequence[Path], preprocess: PreprocessConfig, stride_s: float,
                       test: Sequence[Path] | None = None) -> TaskData:
    """MIT-BIH 10 s MLII windows every ``stride_s`` seconds with the window labels any_pvc, any_sveb and af
    (:mod:`clef_core.evaluation.mitdb_windows`, the study's MIT-BIH tasks), grouped by record; ``test``
    records make an explicit test set, otherwise the records are cross-validated by record."""

    def load(paths: Sequence[Path], name: str) -> TaskData:
        x, y, groups = load_windows(paths, preprocess, stride_s)
        return TaskData(name, "binary", list(WINDOW_LABELS), zscore(x), y.astype(np.float64), groups, "II",
                        info={"records": sorted(set(groups.tolist())), "windows": int(len(y)), "stride_s": stride_s,
                              "positive_windows": {c: int(y[:, k].sum()) for k, c in enumerate(WINDOW_LABELS)},
                              "positive_records": {c: sorted(set(groups[y[:, k] == 1].tolist()))
                                                   for k, c in enumerate(WINDOW_LABELS)}})

    return _with_test(load, records, test, "mitdb_windows")


def _with_test(load: Any, train: Sequence[Path], test: Sequence[Path] | None, name: str) -> TaskData:
    """``load(train)`` as task ``name``, with ``load(test)`` as its explicit test set when given."""
    if test:
        check_disjoint(train, test)
    task = load(train, name)
    if test:
        task.test = load(test, f"{name}_test")
    return task
