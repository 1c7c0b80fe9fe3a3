"""One entry point: the clinical table of a cohort folder, whatever its layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clef_core.data.records import detect_layout as detect_kind
from clef_core.metadata.table import ClinicalTable, MetadataConfig

KINDS = ("auto", "mimic", "wfdb")


def extract_clinical_table(
    source: str | Path,
    config: MetadataConfig | None = None,
    *,
    kind: str = "auto",
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> ClinicalTable:
    """Extract the clinical table (one row per ECG record) of ``source`` and compute the
    configured risk model's risk and completeness.

    ``config``: a :class:`MetadataConfig` (an experiment's ``exp.metadata``: its [metadata] and
    [risk] sections), or None for the defaults; keyword ``overrides`` replace single settings
    (``risk_model``, ``region``, ``policy``, ``prevent_variant``, ``prevent_horizon``,
    ``prevent_outcome``, ``pce_race``, ``window_days``, ``diagnosis_window_days``, ``hosp_dir``,
    ``diagnosis_time``, ``absent_code_is_negative``). ``kind``: "auto" | "mimic" | "wfdb".
    ``progress`` gets a line per step of a MIMIC extraction.
    """
    from clef_core.metadata.mimic import extract_mimic
    from clef_core.metadata.wfdb_headers import extract_wfdb

    settings = MetadataConfig() if config is None else config
    if overrides:
        settings = settings.replace(**overrides)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    source = Path(source)
    kind = detect_kind(source) if kind == "auto" else kind
    return extract_mimic(source, settings, progress) if kind == "mimic" else extract_wfdb(source, settings)
