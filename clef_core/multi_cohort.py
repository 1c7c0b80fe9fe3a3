"""Several cohort folders pretrained as one cohort (``clef pretrain --cohort DIR DIR ...``).

Each folder (a MIMIC-IV-ECG layout root or a folder of WFDB records) keeps its own clinical
table (extracted once and cached in ``work_dir/folders/<label>/``, as :func:`prepare_site` does
for one folder) and all records go into one store in ``work_dir/store``. Record and patient ids
are prefixed with the folder's label (its name, ``mitdb/101``), so the same id in two folders is
two records of two patients; two folders with the same name get ``-2``, ``-3``, ... in the
order given. A record whose folder holds no clinical metadata (MIT-BIH headers carry none) gets
the missing-metadata policy's risk like any other record: unknown (NaN) when SCORE2 cannot be
computed. The store is rebuilt when the folder list or any folder's records change.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from clef_core.atomic import write_json_atomic
from clef_core.data.records import RecordRef, detect_layout, iter_source
from clef_core.prepared_site import (CACHE_VERSION, SITE_KEY, PreparedSite, clinical_table, cohort_fingerprint,
                                prepare_site)

if TYPE_CHECKING:
    from clef_core.experiment import Experiment
    from clef_core.metadata import MetadataConfig

FOLDERS_DIR = "folders"


def folder_labels(roots: Sequence[Path]) -> list[str]:
    """One label per folder: its name, ``-2``, ``-3``, ... appended to repeated names (in order).
    The same folder twice is an error naming it."""
    seen: set[Path] = set()
    labels: list[str] = []
    for root in roots:
        resolved = Path(root).resolve()
        if resolved in seen:
            raise ValueError(f"cohort folder {root} is given twice")
        seen.add(resolved)
        label, k = resolved.name, 1
        while label in labels:
            k += 1
            label = f"{resolved.name}-{k}"
        labels.append(label)
    return labels


def folder_records(roots: Sequence[Path], labels: Sequence[str]) -> Iterator[RecordRef]:
    """Every record of every folder, in order, its record and subject ids prefixed ``label/``."""
    for root, label in zip(roots, labels, strict=True):
        for ref in iter_source(root):
            yield replace(ref, record_id=f"{label}/{ref.record_id}", subject_id=f"{label}/{ref.subject_id}")


def folders_clinical_table(roots: Sequence[Path], labels: Sequence[str], work: Path, settings: MetadataConfig) -> pd.DataFrame:
    """The folders' clinical tables (each cached in ``work/folders/<label>``), ids prefixed, stacked."""
    tables = []
    for root, label in zip(roots, labels, strict=True):
        table = clinical_table(root, work / FOLDERS_DIR / label, settings).copy()
        for column in ("record_id", "subject_id"):
            if column in table.columns:
                table[column] = label + "/" + table[column].astype(str)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def prepare_folders(cohort_dirs: Sequence[str | Path], work_dir: str | Path, exp: Experiment, *,
                    progress: bool = True, verify: bool = False, workers: int = 1) -> PreparedSite:
    """One :class:`PreparedSite` over every folder of ``cohort_dirs`` (one folder: :func:`prepare_site`
    itself), cached in ``work_dir``. Its ``root`` is the folders' common parent; it has no labels table."""
    from clef_core.data.store import ECGStore, build_store

    if not cohort_dirs:
        raise ValueError("no cohort folder given")
    if len(cohort_dirs) == 1:
        return prepare_site(cohort_dirs[0], work_dir, exp, progress=progress, verify=verify, workers=workers)
    roots = [Path(d).resolve() for d in cohort_dirs]
    labels = folder_labels(roots)
    layouts = [detect_layout(root) for root in roots]  # a missing or empty folder: an error naming it
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    source = {"version": CACHE_VERSION, "cohorts": [str(r) for r in roots], "labels": labels,
              "fingerprints": [cohort_fingerprint(r) for r in roots]}
    key_file = work / SITE_KEY
    if not key_file.is_file() or json.loads(key_file.read_text(encoding="utf-8")) != source:
        # other folders (or changed ones): drop what was derived from them. The store's own cache
        # cannot tell two folder lists apart (its source is a list of records), so the key is
        # written before the build: an interrupted build of the same folders resumes.
        shutil.rmtree(work / "store", ignore_errors=True)
        shutil.rmtree(work / FOLDERS_DIR, ignore_errors=True)
        write_json_atomic(key_file, source)
    clinical = folders_clinical_table(roots, labels, work, exp.metadata)
    refs = list(folder_records(roots, labels))
    report = build_store(refs, work / "store", exp.preprocess, progress=progress,
                         overwrite=True, workers=workers)
    store = ECGStore.open(work / "store", verify=verify)
    return PreparedSite(store=store, clinical=clinical, labels=None, root=Path(os.path.commonpath(roots)),
                        layout="mimic" if set(layouts) == {"mimic"} else "wfdb", work_dir=work, build_report=report)
