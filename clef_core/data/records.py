"""Reading ECG records: WFDB records (any lead set, any rate, .dat or .mat signals),
WFDB annotations, and the two cohort sources (MIMIC-IV-ECG layout, a folder of WFDB records).

A record comes back in mV with canonical lead names (:mod:`clef_core.data.leads`); channels
that are not one of the 12 leads (Frank leads, noise channels) are left out. Units are checked
and converted (uV, mV, V); anything else is ``bad_units`` rather than a silent mis-scale.
Bad input raises :class:`~clef_core.data.errors.BadRecordError` naming the record.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import wfdb

from clef_core.data.errors import BadRecordError
from clef_core.data.leads import lead_channels

FS_RANGE = (10.0, 50_000.0)  # Hz; outside this a header's sampling rate is absurd

# Physical unit -> factor to mV, keys lower-case. WFDB's default unit is mV.
_UNIT_TO_MV = {
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3, "mcv": 1e-3,
    "nv": 1e-6,
    "v": 1e3, "volt": 1e3, "volts": 1e3,
}  # fmt: skip

# Bits per stored sample of the uncompressed WFDB formats (PhysioNet signal-file spec).
_FORMAT_BITS = {
    "8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12, "310": 32 / 3, "311": 32 / 3,
}  # fmt: skip


@dataclass
class EcgRecord:
    """One ECG record in mV: ``signal`` (n_leads, n_samples) float32, rows named by ``leads``."""

    name: str
    signal: np.ndarray
    fs: float
    leads: list[str]
    source_leads: list[str]
    units: list[str]
    comments: list[str] = field(default_factory=list)
    base_datetime: datetime | None = None

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs


@dataclass
class Annotations:
    """WFDB annotations: beat/rhythm ``sample`` indices, ``symbol`` and ``aux_note`` per annotation."""

    record: str
    fs: float
    sample: np.ndarray
    symbol: list[str]
    aux_note: list[str]

    @property
    def rhythm_changes(self) -> list[tuple[int, str]]:
        """(sample, rhythm) at each rhythm change, e.g. (1234, "AFIB") from aux_note "(AFIB"."""
        return [
            (int(s), note[1:])
            for s, sym, note in zip(self.sample, self.symbol, self.aux_note)
            if sym == "+" and note.startswith("(")
        ]


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a record is and whose it is; both cohort sources yield these."""

    record_id: str
    subject_id: str
    path: Path  # without extension
    cart_id: str | None = None
    ecg_time: datetime | None = None


# --------------------------------------------------------------------------- reading one record


def unit_factor(unit: str | None, record_id: str, lead: str) -> float:
    """Factor that turns values in ``unit`` into mV (``None``/empty: WFDB default mV)."""
    key = (unit or "mV").strip().lower()
    if key not in _UNIT_TO_MV:
        raise BadRecordError(record_id, "bad_units", f"lead {lead} has units {unit!r}, not a voltage")
    return _UNIT_TO_MV[key]


def _read_header(path: Path, record_id: str) -> Any:
    if not path.with_suffix(".hea").is_file():
        raise BadRecordError(record_id, "missing_file", f"{path.with_suffix('.hea')} not found")
    try:
        return wfdb.rdheader(str(path))
    except Exception as exc:  # wfdb raises assorted types for a malformed header
        raise BadRecordError(record_id, "corrupt_signal", f"unreadable header: {exc}") from exc


def check_signal_files(header: Any, directory: Path, record_id: str) -> None:
    """Compare each signal file's size with what the header implies.

    A file that ends inside a frame is ``truncated``; one holding a whole number of frames
    but not ``sig_len`` of them is ``header_length_mismatch`` (a header lying about length).
    Compressed formats and multi-segment records are left to wfdb.
    """
    if not getattr(header, "file_name", None) or not header.sig_len:
        return
    spf = header.samps_per_frame or [1] * header.n_sig
    offsets = header.byte_offset or [None] * header.n_sig
    files: dict[str, tuple[str, int, int]] = {}
    for name, fmt, s, off in zip(header.file_name, header.fmt, spf, offsets):
        _, old_spf, _ = files.get(name, (fmt, 0, 0))
        files[name] = (fmt, old_spf + int(s or 1), int(off or 0))
    for name, (fmt, frame_samples, offset) in files.items():
        path = directory / name
        if not path.is_file():
            raise BadRecordError(record_id, "missing_file", f"signal file {path} not found")
        bits = _FORMAT_BITS.get(str(fmt))
        if bits is None:
            continue
        frame_bits = frame_samples * bits
        data_bits = (path.stat().st_size - offset) * 8
        have_frames = data_bits / frame_bits
        if have_frames < header.sig_len:
            if data_bits % frame_bits:
                raise BadRecordError(
                    record_id, "truncated",
                    f"{name} ends inside a frame after {math.floor(have_frames)} of {header.sig_len} frames",
                )
            raise BadRecordError(
                record_id, "header_length_mismatch",
                f"header says {header.sig_len} samples, {name} holds {int(have_frames)}",
            )
        if have_frames >= header.sig_len + 1:
            raise BadRecordError(
                record_id, "header_length_mismatch",
                f"header says {header.sig_len} samples, {name} holds {math.floor(have_frames)}",
            )


def _base_datetime(rec: Any) -> datetime | None:
    if rec.base_date is None or rec.base_time is None:
        return None
    return datetime.combine(rec.base_date, rec.base_time)


def read_record(path: str | Path, *, record_id: str | None = None) -> EcgRecord:
    """Read the WFDB record at ``path`` (no extension) into an :class:`EcgRecord` in mV.

    ``record_id`` names the record in errors (default: the file stem). The header is parsed
    once (wfdb's parser is the slow part of a read); only when wfdb fails is it parsed again
    to tell a truncated or lying file from a corrupt one.
    """
    path = Path(path)
    rid = record_id or path.name
    if not path.with_suffix(".hea").is_file():
        raise BadRecordError(rid, "missing_file", f"{path.with_suffix('.hea')} not found")
    try:
        rec = wfdb.rdrecord(str(path))
    except FileNotFoundError as exc:
        raise BadRecordError(rid, "missing_file", str(exc)) from exc
    except Exception as exc:  # wfdb raises ValueError/IndexError/... for a corrupt file
        check_signal_files(_read_header(path, rid), path.parent, rid)
        raise BadRecordError(rid, "corrupt_signal", f"{type(exc).__name__}: {exc}") from exc
    fs = float(rec.fs or 0.0)
    if not (math.isfinite(fs) and FS_RANGE[0] <= fs <= FS_RANGE[1]):
        raise BadRecordError(rid, "bad_sampling_rate", f"{rec.fs} Hz outside {FS_RANGE} Hz")
    if not rec.n_sig:
        raise BadRecordError(rid, "unknown_leads", "header lists no signals")
    channels = lead_channels(rec.sig_name or [], rid)
    check_signal_files(rec, path.parent, rid)
    return _to_ecg_record(rec, channels, rid)


def _to_ecg_record(rec: Any, channels: dict[str, int], rid: str) -> EcgRecord:
    if rec.p_signal is None or rec.p_signal.ndim != 2:
        raise BadRecordError(rid, "corrupt_signal", "no physical signal")
    leads = list(channels)
    signal = np.empty((len(leads), rec.p_signal.shape[0]), dtype=np.float32)
    for row, lead in enumerate(leads):
        col = channels[lead]
        signal[row] = rec.p_signal[:, col] * unit_factor(rec.units[col], rid, lead)
    return EcgRecord(
        name=rid,
        signal=signal,
        fs=float(rec.fs),
        leads=leads,
        source_leads=[rec.sig_name[channels[lead]] for lead in leads],
        units=[rec.units[channels[lead]] for lead in leads],
        comments=list(rec.comments or []),
        base_datetime=_base_datetime(rec),
    )


def read_annotations(path: str | Path, extension: str = "atr") -> Annotations:
    """Read WFDB annotations ``path.extension`` (beats and rhythm changes, e.g. MIT-BIH .atr)."""
    path = Path(path)
    if not path.with_name(f"{path.name}.{extension}").is_file():
        raise BadRecordError(path.name, "missing_file", f"{path}.{extension} not found")
    try:
        ann = wfdb.rdann(str(path), extension)
    except Exception as exc:
        raise BadRecordError(path.name, "corrupt_signal", f"unreadable annotations: {exc}") from exc
    notes = [(n or "").rstrip("\x00").strip() for n in (ann.aux_note or [""] * len(ann.sample))]
    return Annotations(
        record=path.name,
        fs=float(ann.fs) if ann.fs else float("nan"),
        sample=np.asarray(ann.sample, dtype=np.int64),
        symbol=list(ann.symbol),
        aux_note=notes,
    )


# --------------------------------------------------------------------------- cohort sources

SourceKind = Literal["mimic", "wfdb_folder"]


def find_table(folder: Path, name: str) -> Path | None:
    """``folder/name.csv`` or ``folder/name.csv.gz`` (None when neither exists)."""
    for candidate in (folder / f"{name}.csv", folder / f"{name}.csv.gz"):
        if candidate.is_file():
            return candidate
    return None


def source_kind(root: str | Path) -> SourceKind:
    """``"mimic"`` when ``root`` holds record_list.csv(.gz), else ``"wfdb_folder"``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"cohort source {root} is not a directory")
    return "mimic" if find_table(root, "record_list") else "wfdb_folder"


def detect_layout(root: str | Path) -> str:
    """"mimic" when ``root`` has record_list.csv(.gz), "wfdb" when it holds any .hea file; an
    error naming the folder otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"cohort folder not found: {root}")
    if find_table(root, "record_list"):
        return "mimic"
    if next(root.rglob("*.hea"), None) is not None:
        return "wfdb"
    raise ValueError(f"{root}: neither a MIMIC-IV-ECG layout (no record_list.csv) nor a folder of WFDB records (no .hea)")


def describe_source(root: str | Path) -> dict[str, str]:
    return {"kind": source_kind(root), "root": str(Path(root).resolve())}


def _parse_time(text: str, where: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{where}: ecg_time {text!r} is not 'YYYY-MM-DD HH:MM:SS'") from exc


def _cart_ids(root: Path) -> pd.Series | None:
    table = find_table(root, "machine_measurements")
    if table is None:
        return None
    cols = pd.read_csv(table, nrows=0).columns
    if "cart_id" not in cols:
        return None
    mm = pd.read_csv(table, usecols=["study_id", "cart_id"], dtype=str, keep_default_na=False)
    return mm.drop_duplicates("study_id").set_index("study_id")["cart_id"].astype("category")


def iter_mimic_records(cohort_root: str | Path, *, chunksize: int = 50_000) -> Iterator[RecordRef]:
    """Records of a MIMIC-IV-ECG layout cohort, in record_list order, with cart_id when known.

    record_id = str(study_id). record_list is read in chunks, so memory does not grow with it.
    """
    root = Path(cohort_root)
    table = find_table(root, "record_list")
    if table is None:
        raise FileNotFoundError(f"{root}: no record_list.csv(.gz)")
    carts = _cart_ids(root)
    reader = pd.read_csv(table, dtype=str, keep_default_na=False, chunksize=chunksize)
    for chunk in reader:
        missing = {"subject_id", "study_id", "path"} - set(chunk.columns)
        if missing:
            raise ValueError(f"{table}: missing column(s) {sorted(missing)}")
        cart = chunk["study_id"].map(carts) if carts is not None else pd.Series(None, index=chunk.index)
        times = chunk["ecg_time"] if "ecg_time" in chunk.columns else pd.Series("", index=chunk.index)
        for sid, subj, rel, c, t in zip(chunk["study_id"], chunk["subject_id"], chunk["path"], cart, times):
            yield RecordRef(
                record_id=sid,
                subject_id=subj,
                path=root / rel,
                cart_id=None if c is None or (isinstance(c, float) and math.isnan(c)) or c == "" else str(c),
                ecg_time=_parse_time(t, f"{table} study {sid}"),
            )


PATIENTS_FILE = "patients.csv"  # record_id,subject_id: which patient each record of a WFDB folder is
PATIENT_COMMENT_KEYS = ("patient", "patient_id", "subject", "subject_id")  # "# Patient: 1234" in a header


def iter_wfdb_folder(root: str | Path) -> Iterator[RecordRef]:
    """Every WFDB record under ``root`` (recursive, sorted, hidden folders skipped).

    record_id = path relative to ``root`` without extension, posix. subject_id = the record's
    patient from ``root/patients.csv`` (columns record_id, subject_id), else from a header comment
    ``# Patient: <id>`` (or Subject / subject_id), else the record_id itself: then every record
    counts as its own patient (:func:`privacy_unit` says so).
    """
    root = Path(root)
    patients = read_patients_file(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".hea"):
                path = Path(dirpath) / name[:-4]
                rid = path.relative_to(root).as_posix()
                subject = patients.get(rid) or header_patient(path.with_suffix(".hea")) or rid
                yield RecordRef(record_id=rid, subject_id=subject, path=path)


def read_patients_file(root: Path) -> dict[str, str]:
    """record_id -> subject_id from ``root/patients.csv`` ({} when there is none)."""
    path = root / PATIENTS_FILE
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"record_id", "subject_id"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)} (expected record_id,subject_id)")
    blank = table[(table["record_id"].str.strip() == "") | (table["subject_id"].str.strip() == "")]
    if len(blank):
        raise ValueError(f"{path}: line {int(blank.index[0]) + 2} has an empty record_id or subject_id")
    dup = table["record_id"][table["record_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{path}: record {dup.iloc[0]!r} is listed more than once")
    return dict(zip(table["record_id"].str.strip(), table["subject_id"].str.strip(), strict=True))


def header_patient(header: Path) -> str:
    """The patient id in a header's comments (``# Patient: 1234``), "" when it has none. Reads
    the text directly: wfdb's full header parser is the slow part of listing a folder."""
    try:
        lines = header.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""  # the store reports the unreadable header when it reads the record
    for line in lines:
        text = line.strip()
        if text.startswith("#") and ":" in text:
            key, value = text[1:].split(":", 1)
            if key.strip().lower().replace(" ", "_") in PATIENT_COMMENT_KEYS and value.strip():
                return value.strip()
    return ""


def privacy_unit(store_index: pd.DataFrame, layout: str) -> Literal["patient", "record"]:
    """What one "patient" of a prepared site really is: ``"record"`` for a WFDB folder where any
    record carries no patient id (each unnamed record is then its own patient, so a person with
    several of them is several privacy units: the guarantee is per record for them), else
    ``"patient"``."""
    if layout == "mimic":
        return "patient"
    return "record" if unnamed_share(store_index) > 0 else "patient"


def unnamed_share(index: pd.DataFrame) -> float:
    """The share of a WFDB folder's records that name no patient (subject id = record id)."""
    if not len(index):
        return 0.0
    records = index.drop_duplicates("record_id")
    return float((records["subject_id"].astype(str) == records["record_id"].astype(str)).mean())


def iter_source(root: str | Path) -> Iterator[RecordRef]:
    """Records of a cohort source, auto-detected (see :func:`source_kind`)."""
    if source_kind(root) == "mimic":
        return iter_mimic_records(root)
    return iter_wfdb_folder(root)


def count_source(root: str | Path) -> int:
    """Number of records :func:`iter_source` will yield (for progress bars), without reading them."""
    root = Path(root)
    if source_kind(root) == "wfdb_folder":
        return sum(1 for _ in iter_wfdb_folder(root))
    table = find_table(root, "record_list")
    if table is None:
        raise FileNotFoundError(f"{root}: no record_list.csv(.gz)")
    with (gzip.open(table, "rt", newline="") if table.suffix == ".gz" else open(table, newline="")) as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)
