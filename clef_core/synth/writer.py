"""Writing the MIMIC-IV-ECG layout: WFDB records, CSV tables, gzipped hosp tables.

WFDB records are written directly (header text + interleaved little-endian int16), which
is what ``wfdb.wrsamp`` produces for format 16 but an order of magnitude faster. Every
file is a pure function of its content (gzip mtime 0, no timestamps), so the same seed
gives byte-identical cohorts.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd

from clef_core.synth.beats import FS, LEADS, N_SAMPLES

GAIN = 200  # adu per mV
DIGITAL_MAX = 32767  # -32768 is format 16's missing-sample marker


def record_path(subject_id: int, study_id: int) -> str:
    """MIMIC-IV-ECG relative record path without extension, e.g. files/p1000/p10000032/s40689238/40689238."""
    sub = f"{int(subject_id):08d}"
    study = f"{int(study_id):08d}"
    return f"files/p{sub[:4]}/p{sub}/s{study}/{study}"


def to_digital(signals_mv: np.ndarray) -> np.ndarray:
    """(B, 12, T) mV -> (B, T, 12) int16 at 200 adu/mV, clipped to the format-16 range."""
    d = np.rint(signals_mv * GAIN)
    np.clip(d, -DIGITAL_MAX, DIGITAL_MAX, out=d)
    return np.ascontiguousarray(d.astype("<i2").transpose(0, 2, 1))


def header_text(name: str, digital: np.ndarray, ecg_time: np.datetime64) -> str:
    """WFDB header of one (T, 12) int16 record; the checksum is the 16-bit sum of samples."""
    stamp = pd.Timestamp(ecg_time)
    lines = [f"{name} {len(LEADS)} {FS} {N_SAMPLES} {stamp:%H:%M:%S} {stamp:%d/%m/%Y}"]
    checksum = digital.sum(axis=0, dtype=np.int64) & 0xFFFF
    for j, lead in enumerate(LEADS):
        lines.append(f"{name}.dat 16 {GAIN}(0)/mV 16 0 {int(digital[0, j])} {int(checksum[j])} 0 {lead}")
    return "\n".join(lines) + "\n"


def write_records(root: Path, frame: pd.DataFrame, signals_mv: np.ndarray) -> None:
    """Write one batch of records (rows of ``frame`` aligned with ``signals_mv``)."""
    digital = to_digital(signals_mv)
    for i, (subject, study, when) in enumerate(zip(frame["subject_id"], frame["study_id"], frame["ecg_time"])):
        rel = record_path(subject, study)
        base = root / rel
        os.makedirs(base.parent, exist_ok=True)
        name = base.name
        base.with_suffix(".dat").write_bytes(digital[i].tobytes())
        base.with_suffix(".hea").write_text(header_text(name, digital[i], when))


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """CSV (``.csv``) or deterministic gzip (``.csv.gz``, mtime 0)."""
    data = df.to_csv(index=False, lineterminator="\n").encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(data)


def format_times(values) -> np.ndarray:
    """datetime64 -> 'YYYY-MM-DD HH:MM:SS' strings."""
    return np.char.replace(np.datetime_as_string(np.asarray(values, dtype="datetime64[s]"), unit="s"), "T", " ")
