"""One entry point: the clinical table of a cohort folder, whatever its layout."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clef_core.metadata.table import ClinicalTable, MetadataConfig

KINDS = ("auto", "mimic", "wfdb")


def detect_kind(source: Path) -> str:
    """"mimic" when ``source`` has record_list.csv(.gz), "wfdb" when it holds any .hea file."""
    if not source.is_dir():
        raise FileNotFoundError(f"cohort folder not found: {source}")
    if (source / "record_list.csv").is_file() or (source / "record_list.csv.gz").is_file():
        return "mimic"
    if next(source.rglob("*.hea"), None) is not None:
        return "wfdb"
    raise ValueError(f"{source}: neither a MIMIC-IV-ECG layout (no record_list.csv) nor a folder of WFDB records (no .hea)")


def extract_clinical_table(
    source: str | Path,
    config: MetadataConfig | Mapping[str, Any] | None = None,
    *,
    kind: str = "auto",
    **overrides: Any,
) -> ClinicalTable:
    """Extract the clinical table (one row per ECG record) of ``source`` and compute SCORE2
    risk and completeness.

    ``config``: a :class:`MetadataConfig`, or a loaded configuration dict (its [metadata] and
    [score2] sections), or None for the defaults; keyword ``overrides`` replace single settings
    (``region``, ``policy``, ``window_days``, ``diagnosis_window_days``, ``hosp_dir``,
    ``diagnosis_time``, ``absent_code_is_negative``). ``kind``: "auto" | "mimic" | "wfdb".
    """
    from clef_core.metadata.mimic import extract_mimic
    from clef_core.metadata.wfdb_headers import extract_wfdb

    if config is None:
        settings = MetadataConfig()
    elif isinstance(config, MetadataConfig):
        settings = config
    else:
        settings = MetadataConfig.from_config(config)
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    source = Path(source)
    kind = detect_kind(source) if kind == "auto" else kind
    return extract_mimic(source, settings) if kind == "mimic" else extract_wfdb(source, settings)
