"""MIT-BIH Arrhythmia beat classification in the AAMI classes, inter-patient protocol.

AAMI EC57 grouping of the MIT-BIH beat symbols (de Chazal, O'Dwyer & Reilly, IEEE TBME 2004):
N = {N, L, R, e, j}, S = {A, a, J, S}, V = {V, E}, F = {F}; Q = {/, f, Q} (paced, fusion of
paced, unclassifiable) is left out, as are non-beat annotations. The inter-patient split: DS1
(training) and DS2 (test) share no patient; the paced records 102, 104, 107, 217 are in neither.

Each annotated beat is classified from the model-length window centred on it: the record's
MLII lead is resampled to the model rate (polyphase, as the store does), band-passed over the
whole record (zero-phase, as the store does) and cut at ``round(sample * rate / fs) - T // 2``
so the annotated sample sits at index ``T // 2``; beats whose window leaves the record are
dropped. For CPU speed at most ``beats_per_class`` beats per record and class are kept (a
uniform draw without replacement, seeded per record; 0 keeps every beat).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clef_core.data.preprocess import PreprocessConfig, bandpass, resample

AAMI_CLASSES = ("N", "S", "V", "F")
AAMI_SYMBOLS = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ"}
_SYMBOL_TO_CLASS = {sym: cls for cls, syms in AAMI_SYMBOLS.items() for sym in syms}
AF_RHYTHM = "AFIB"

DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
       "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
       "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")


def aami_class(symbol: str) -> str | None:
    """"N", "S", "V", "F" or "Q" for a beat symbol; None for non-beat annotations."""
    return _SYMBOL_TO_CLASS.get(symbol)


def read_lead(path: Path, lead: str) -> tuple[Any, np.ndarray, Any]:
    """(record, its ``lead`` in mV at the record's rate, its annotations); an error naming the
    record when it has no such lead."""
    from clef_core.data.records import read_annotations, read_record

    rec = read_record(path)
    if lead not in rec.leads:
        raise ValueError(f"MIT-BIH record {rec.name}: no lead {lead} (has {rec.source_leads})")
    return rec, rec.signal[rec.leads.index(lead)], read_annotations(path)


def rhythm_share(changes: Sequence[tuple[int, str]], n_samples: int, starts: np.ndarray, length: int,
                 rhythm: str = AF_RHYTHM) -> np.ndarray:
    """Share of each window ``[start, start + length)`` (record samples; a window running past the
    record's end counts the missing part as outside) spent in ``rhythm``, from the record's rhythm
    ``changes`` ((sample, rhythm) in time order: ``Annotations.rhythm_changes``). The rhythm in
    force at a sample is the last change at or before it; the first rhythm holds from the record's
    start (in MIT-BIH the first note sits within the first second)."""
    inside = np.zeros(n_samples, dtype=np.int64)
    if changes:
        bounds = [0, *(min(max(int(s), 0), n_samples) for s, _ in changes[1:]), n_samples]
        for lo, hi, (_, note) in zip(bounds[:-1], bounds[1:], changes):
            if note == rhythm:
                inside[lo:hi] = 1
    cum = np.concatenate([[0], np.cumsum(inside)])
    starts = np.clip(np.asarray(starts, np.int64), 0, n_samples)
    return (cum[np.minimum(starts + length, n_samples)] - cum[starts]) / length


def model_rate(signal: np.ndarray, fs: float, cfg: PreprocessConfig) -> np.ndarray:
    """The 1-D ``signal`` resampled to the model rate (polyphase) and band-passed over its whole
    length (zero-phase), as the store does."""
    return bandpass(resample(np.asarray(signal, np.float64)[None, :], fs, cfg.sample_rate), cfg)[0]


def beat_windows(signal: np.ndarray, fs: float, samples: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Windows (M, T) float32 in mV centred on ``samples`` (indices at ``fs``) of the 1-D
    ``signal``, after resampling to ``cfg.sample_rate`` and band-passing; and the boolean mask over
    ``samples`` of the beats kept (window inside the record)."""
    x = model_rate(signal, fs, cfg)
    T = cfg.window_samples
    centre = np.rint(np.asarray(samples, np.float64) * cfg.sample_rate / fs).astype(np.int64)
    start = centre - T // 2
    keep = (start >= 0) & (start + T <= len(x))
    idx = start[keep][:, None] + np.arange(T)[None, :]
    return x[idx].astype(np.float32), keep


@dataclasses.dataclass
class BeatSet:
    """Beat-centred windows ``x`` (N, T) mV, AAMI class index ``y`` (N,), ``records`` (N,) as groups,
    and per-record counts of the available / kept beats by class."""

    x: np.ndarray
    y: np.ndarray
    records: np.ndarray
    counts: dict[str, dict[str, dict[str, int] | int]]


def annotated_records(folder: str | Path) -> list[Path]:
    """Every record of an MIT-BIH-format ``folder`` (not recursive) that has a header and reference
    annotations (``NAME.hea`` + ``NAME.atr``), sorted by name; paths without extension."""
    folder = Path(folder)
    return sorted(p.with_suffix("") for p in folder.glob("*.atr") if p.with_suffix(".hea").is_file())


def resolve_records(spec: str | Sequence[str], root: str | Path) -> list[Path]:
    """Record paths (without extension) from "DS1", "DS2", names ("101,106"), paths or folders (a
    folder stands for its :func:`annotated_records`); names are looked up in ``root``. Unknown
    records and folders without an annotated record are errors naming them."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    names: list[str] = []
    for item in items:
        names.extend(DS1 if item.upper() == "DS1" else DS2 if item.upper() == "DS2" else [item])
    paths: list[Path] = []
    missing: list[Path] = []
    for name in names:
        p = Path(name)
        if p.is_dir():
            found = annotated_records(p)
            if not found:
                raise FileNotFoundError(f"MIT-BIH records: no record with a .hea and an .atr file in folder {p}")
            paths.extend(found)
            continue
        p = p.with_suffix("") if p.suffix in (".hea", ".dat", ".atr") else p
        if not p.with_name(p.name + ".hea").is_file():
            p = Path(root) / name
        (paths if p.with_name(p.name + ".hea").is_file() else missing).append(p)
    if missing:
        raise FileNotFoundError(f"MIT-BIH record(s) not found: {', '.join(m.name for m in missing)} (looked in {root})")
    return paths


def check_disjoint(train: Sequence[Path], test: Sequence[Path]) -> None:
    """An error naming the records that are both training and test records (by name: a record copied
    into another folder is the same patient; rename a record of another database that reuses a name)."""
    overlap = sorted({p.name for p in train} & {p.name for p in test})
    if overlap:
        raise ValueError(f"MIT-BIH: record(s) {overlap} are both training and test records (a probe would be scored "
                         "on patients it was fitted on)")


def load_beats(
    records: Sequence[Path],
    cfg: PreprocessConfig,
    lead: str = "II",
    beats_per_class: int = 40,
    seed: int = 0,
) -> BeatSet:
    """Beat windows of ``records`` (see the module docstring); Q beats and non-beats left out."""
    xs, ys, groups = [], [], []
    counts: dict[str, dict[str, dict[str, int] | int]] = {}
    for path in records:
        rec, signal, ann = read_lead(path, lead)
        classes = np.array([aami_class(s) or "" for s in ann.symbol])
        rng = np.random.default_rng([zlib.crc32(rec.name.encode()), seed])
        chosen = []
        available = {c: int((classes == c).sum()) for c in AAMI_CLASSES}
        for c in AAMI_CLASSES:
            idx = np.flatnonzero(classes == c)
            if beats_per_class and len(idx) > beats_per_class:
                idx = np.sort(rng.choice(idx, beats_per_class, replace=False))
            chosen.append(idx)
        sel = np.sort(np.concatenate(chosen))
        windows, keep = beat_windows(signal, rec.fs, ann.sample[sel], cfg)
        labels = np.array([AAMI_CLASSES.index(c) for c in classes[sel][keep]], dtype=np.int64)
        xs.append(windows)
        ys.append(labels)
        groups.append(np.full(len(labels), rec.name))
        counts[rec.name] = {"available": available,
                            "used": {c: int((labels == k).sum()) for k, c in enumerate(AAMI_CLASSES)},
                            "edge_dropped": int((~keep).sum())}
    T = cfg.window_samples
    return BeatSet(
        x=np.concatenate(xs) if xs else np.zeros((0, T), np.float32),
        y=np.concatenate(ys) if ys else np.zeros(0, np.int64),
        records=np.concatenate(groups) if groups else np.zeros(0, str),
        counts=counts,
    )
