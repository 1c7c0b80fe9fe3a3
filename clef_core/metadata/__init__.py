"""Clinical metadata: one row per ECG record with the risk-model inputs, risk and completeness.

Sources: the MIMIC-IV-ECG + hosp layout (:mod:`clef_core.metadata.mimic`) and WFDB header
comments (:mod:`clef_core.metadata.wfdb_headers`); rules in docs/clinical-metadata.md.
"""

from clef_core.metadata.extract import detect_kind, extract_clinical_table
from clef_core.metadata.table import (
    ClinicalTable,
    MetadataConfig,
    load_clinical_table,
    save_clinical_table,
)

__all__ = [
    "ClinicalTable",
    "MetadataConfig",
    "detect_kind",
    "extract_clinical_table",
    "load_clinical_table",
    "save_clinical_table",
]
