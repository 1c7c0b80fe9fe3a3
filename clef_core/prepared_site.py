"""From a cohort folder to what training needs: the clinical table and the preprocessed store.

:func:`prepare_site` accepts a MIMIC-IV-ECG layout root (``record_list.csv``) or any folder of
WFDB records (detected automatically), extracts the clinical table once (cached in
``work_dir/clinical.csv``, keyed by the cohort path and the settings that shape it) and builds
the store once into ``work_dir/store`` (the store builder is itself resumable and skips records
it cannot use, with reasons in its report). :func:`default_cohort` synthesises the built-in
multi-site cohort from ``[synth]`` when no cohort is given.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from clef_core.atomic import write_json_atomic
from clef_core.data.records import PATIENTS_FILE, detect_layout, privacy_unit

if TYPE_CHECKING:
    from clef_core.experiment import Experiment
    from clef_core.metadata import MetadataConfig

CLINICAL_CACHE = "clinical.csv"
CLINICAL_KEY = "clinical.key.json"
SITE_KEY = "site.key.json"
COHORT_MARKER = ".clef-cohort-complete.json"
CACHE_VERSION = 1


@dataclasses.dataclass
class PreparedSite:
    """One site ready for training: ``store`` (ECGStore), its ``clinical`` table (one row per
    record), the cohort's ``labels`` when it has a labels.csv, and where it came from."""

    store: Any
    clinical: pd.DataFrame
    labels: pd.DataFrame | None
    root: Path
    layout: str = "mimic"  # "mimic" | "wfdb"
    work_dir: Path | None = None
    build_report: Any = None

    @property
    def privacy_unit(self) -> str:
        """"patient", or "record" when a WFDB folder names no patients (records.privacy_unit)."""
        return privacy_unit(self.store.index, self.layout)

    @property
    def skip_report(self) -> Path:
        """The store's ``skipped.csv``: every record left out, with its reason."""
        return Path(self.store.path) / "skipped.csv"

    def summary(self) -> dict[str, Any]:
        """A small provenance summary: where the data came from and how much of it was used."""
        clinical = self.clinical
        windows = len(self.store)
        index = self.store.index
        out: dict[str, Any] = {
            "source": str(self.root),
            "layout": self.layout,
            "windows": int(windows),
            "records": int(index["record_id"].nunique()) if "record_id" in index else None,
            "subjects": int(index["subject_id"].nunique()) if "subject_id" in index else None,
            "clinical_rows": int(len(clinical)),
            "risk_known": float(clinical["risk"].notna().mean()) if "risk" in clinical and len(clinical) else None,
            "mean_completeness": float(clinical["completeness"].mean()) if "completeness" in clinical and len(clinical) else None,
            "skipped": int(self.build_report.n_skipped) if self.build_report is not None else None,
            "skipped_by_reason": dict(self.build_report.skipped) if self.build_report is not None else None,
            "windows_skipped_by_reason": (dict(self.build_report.skipped_windows)
                                          if self.build_report is not None else None),
        }
        cohort_json = self.root / "cohort.json"
        if cohort_json.is_file():
            out["cohort"] = json.loads(cohort_json.read_text(encoding="utf-8"))
        return out


def prepare_site(
    cohort_dir: str | Path,
    work_dir: str | Path,
    exp: Experiment,
    *,
    progress: bool = True,
    verify: bool = False,
    workers: int = 1,
) -> PreparedSite:
    """Clinical table + store for ``cohort_dir``, cached under ``work_dir`` (a store cached there
    with other [preprocess] settings or from another cohort is rebuilt). ``verify`` re-reads the
    whole store to check its sha256 sums (file sizes and the manifest are always checked).
    ``workers`` > 1 preprocesses records in that many processes (the same store)."""
    from clef_core.data.store import ECGStore, build_store

    root = Path(cohort_dir).resolve()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    layout = detect_layout(root)
    source = {"version": CACHE_VERSION, "cohort": str(root), "fingerprint": cohort_fingerprint(root)}
    key_file = work / SITE_KEY
    if key_file.is_file() and json.loads(key_file.read_text(encoding="utf-8")) != source:
        # another cohort (or a regenerated one) was prepared here: drop what was derived from it
        shutil.rmtree(work / "store", ignore_errors=True)
        (work / CLINICAL_CACHE).unlink(missing_ok=True)
        (work / CLINICAL_KEY).unlink(missing_ok=True)
    clinical = clinical_table(root, work, exp.metadata)
    report = build_store(root, work / "store", exp.preprocess, progress=progress, overwrite=True,
                         workers=workers)
    store = ECGStore.open(work / "store", verify=verify)
    key_file.write_text(json.dumps(source, indent=2), encoding="utf-8")
    return PreparedSite(
        store=store,
        clinical=clinical,
        labels=read_labels(root),
        root=root,
        layout=layout,
        work_dir=work,
        build_report=report,
    )


def cohort_fingerprint(root: Path) -> str:
    """Size and modification time of the files that define a cohort (record_list, cohort.json,
    the hosp tables; every .hea of a WFDB folder): changes when the cohort is replaced."""
    import hashlib

    if detect_layout(root) == "mimic":
        files = [root / n for n in ("record_list.csv", "record_list.csv.gz", "cohort.json") if (root / n).is_file()]
        hosp = root / "hosp"
        files += sorted(hosp.glob("*.csv*")) if hosp.is_dir() else []
    else:
        files = sorted(root.rglob("*.hea")) + [p for p in [root / PATIENTS_FILE] if p.is_file()]
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(root).as_posix()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def clinical_table(root: Path, work: Path, settings: MetadataConfig) -> pd.DataFrame:
    """The clinical table of ``root`` (``clef_core.metadata``), extracted once and cached in
    ``work/clinical.csv`` (+ its problems and settings sidecars); re-extracted when the cohort
    path or the [metadata]/[score2] settings change. The key file is written last, so an
    interrupted write is redone. Always read back from the file, so a first run and a cached
    run see the same table."""
    from clef_core.metadata import extract_clinical_table, load_clinical_table, save_clinical_table

    key = {"version": CACHE_VERSION, "cohort": str(root), "settings": settings.sidecar()}
    cache, key_file = work / CLINICAL_CACHE, work / CLINICAL_KEY
    if not (cache.is_file() and key_file.is_file() and json.loads(key_file.read_text(encoding="utf-8")) == key):
        key_file.unlink(missing_ok=True)
        save_clinical_table(extract_clinical_table(root, settings), cache)
        key_file.write_text(json.dumps(key, indent=2), encoding="utf-8")
    return load_clinical_table(cache).table


def read_labels(root: Path) -> pd.DataFrame | None:
    for name in ("labels.csv", "labels.csv.gz"):
        if (root / name).is_file():
            return pd.read_csv(root / name, dtype={"study_id": str, "subject_id": str})
    return None


def default_cohort(work_dir: str | Path, exp: Experiment, *, progress: bool = False) -> Path:
    """``work_dir/cohort``: the built-in synthetic cohort of ``[synth]`` (its hosp tables cut with
    the ``[metadata]`` windows), generated unless a complete one with the same settings is there.

    The generator builds in a hidden sibling folder and moves it into place; this function then
    writes a marker holding the settings. No marker (an interrupted run) or other settings: the
    folder is regenerated.
    """
    from clef_core.experiment import section_dict
    from clef_core.synth import generate_cohort

    work = Path(work_dir)
    target = work / "cohort"
    windows = {k: getattr(exp.metadata, k) for k in ("window_days", "diagnosis_window_days")}
    settings = {"version": CACHE_VERSION, "synth": section_dict("synth", exp.synth), "windows": windows}
    marker = target / COHORT_MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == settings:
        return target
    if target.exists() and not (target / "cohort.json").is_file():
        shutil.rmtree(target)  # not a finished synthetic cohort: our own half-written leftovers
    work.mkdir(parents=True, exist_ok=True)
    generate_cohort(target, **exp.synth.as_kwargs(), **windows, overwrite=True, progress=progress)
    write_json_atomic(marker, settings)
    return target
