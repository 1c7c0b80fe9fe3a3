"""Real windows for calibration and for the fidelity gate, preprocessed exactly as on the device.

Every window goes through edge/runtime (the numpy resampler, zero-phase band-pass and z-score
of ``preprocess.json``), never through a training-side shortcut, so calibration sees the
device's input distribution. Records are split by record (never by window) with a fixed seed:
about a third are held out for the gate and never seen in calibration. Calibration gets, per
record and lead, the windows as recorded plus ``cuts`` variants of the raw record: a circular
shift and a time stretch of +-10 % (``np.interp``, periodic), filtered afterwards, which widens
the set the way the reference experiment did (edge-net1d-notes.md, section 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.runtime.spec import PreprocessSpec
from edge.runtime.quality import SignalError
from edge.runtime.stream import windows_of


@dataclass
class WindowSets:
    calibration: np.ndarray  # (n, T) float32
    heldout: np.ndarray  # (m, T) float32
    calibration_records: list[str]
    heldout_records: list[str]
    leads: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"calibration_windows": len(self.calibration), "heldout_windows": len(self.heldout),
                "calibration_records": self.calibration_records, "heldout_records": self.heldout_records,
                "leads": self.leads, "skipped_records": self.skipped}


def record_paths(source: Path) -> list[Path]:
    """WFDB records (header stems) under ``source``, sorted."""
    return sorted(p.with_suffix("") for p in Path(source).rglob("*.hea"))


def cut(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A circular shift and a +-10 % periodic time stretch of a raw 1-D record."""
    n = x.size
    stretch = rng.uniform(0.9, 1.1)
    t = (np.arange(n) * stretch + rng.integers(n)) % n
    return np.interp(t, np.arange(n), x, period=n)


def device_windows(x: np.ndarray, fs: float, spec: PreprocessSpec, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` usable (not skipped: edge/runtime/quality.py) windows, evenly spaced over the record; none
    from a lead the device would refuse (too short, mis-scaled, noise: edge/runtime/quality.py)."""
    try:
        wins = [w.x for w in windows_of(x, fs, spec) if w.x is not None]
    except SignalError:
        return []
    if len(wins) > limit:
        wins = [wins[i] for i in np.linspace(0, len(wins) - 1, limit).round().astype(int)]
    return wins


def real_windows(
    source: str | Path | Sequence[str | Path],
    spec: PreprocessSpec,
    *,
    leads: Sequence[str] = ("I", "II"),
    heldout_fraction: float = 1 / 3,
    cuts: int = 2,
    windows_per_record: int = 3,
    seed: int = 0,
) -> WindowSets:
    """Calibration and held-out windows from the WFDB records under ``source`` (a folder, or several:
    e.g. the reference 12-lead set plus the deployment's own records; each record is named
    ``folder/record`` then)."""
    from clef_core.data.records import read_record

    sources = [Path(source)] if isinstance(source, (str, Path)) else [Path(x) for x in source]
    named = [(p, str(p.relative_to(src)) if len(sources) == 1 else f"{src.name}/{p.relative_to(src)}")
             for src in sources for p in record_paths(src)]
    paths = [p for p, _ in named]
    source = ", ".join(str(x) for x in sources)
    if len(paths) < 3:
        raise ValueError(f"{source}: need at least 3 WFDB records for calibration + held-out windows, found {len(paths)}")
    order = np.random.RandomState(seed).permutation(len(paths))
    n_held = max(1, int(round(len(paths) * heldout_fraction)))
    held = {int(i) for i in order[:n_held]}
    rng = np.random.default_rng(seed)
    cal, test, skipped = [], [], {}
    cal_names: list[str] = []
    held_names: list[str] = []
    for i, (path, name) in enumerate(named):
        try:
            rec = read_record(path, record_id=name)
        except ValueError as exc:  # BadRecordError
            skipped[name] = str(exc)
            continue
        got = 0
        for lead in leads:
            if lead not in rec.leads:
                continue
            x = rec.signal[rec.leads.index(lead)].astype(np.float64)
            if not np.isfinite(x).any():
                continue
            if i in held:
                wins = device_windows(x, rec.fs, spec, windows_per_record)
                test += wins
            else:
                wins = device_windows(x, rec.fs, spec, windows_per_record)
                for _ in range(cuts):
                    wins += device_windows(cut(x, rng), rec.fs, spec, 1)
                cal += wins
            got += len(wins)
        if got:
            (held_names if i in held else cal_names).append(name)
        else:
            skipped[name] = f"no usable window in leads {list(leads)}"
    if len(cal) < 8 or len(test) < 4:
        raise ValueError(f"{source}: only {len(cal)} calibration and {len(test)} held-out windows in leads "
                         f"{list(leads)}; need at least 8 and 4")
    return WindowSets(np.stack(cal).astype(np.float32), np.stack(test).astype(np.float32),
                      cal_names, held_names, list(leads), skipped)


def report_windows(source: str | Path, spec: PreprocessSpec, *, lead: str = "II", windows_per_record: int = 2,
                   minutes: float = 5.0) -> tuple[np.ndarray, list[str]]:
    """Windows for a report-only fidelity check on another kind of data (e.g. MIT-BIH Holter MLII
    at 360 Hz): ``windows_per_record`` evenly spaced usable windows from the first ``minutes`` of
    ``lead`` of every WFDB record under ``source``, through the device preprocessing; and the
    records used. Never used for calibration."""
    from clef_core.data.records import read_record

    wins, names = [], []
    for path in record_paths(Path(source)):
        try:
            rec = read_record(path)
        except ValueError:  # BadRecordError: not usable, as in calibration
            continue
        if lead not in rec.leads:
            continue
        x = rec.signal[rec.leads.index(lead)][: int(minutes * 60 * rec.fs)].astype(np.float64)
        got = device_windows(x, rec.fs, spec, windows_per_record)
        if got:
            wins += got
            names.append(path.name)
    if len(wins) < 2:
        raise ValueError(f"{source}: fewer than 2 usable lead {lead} windows for the report")
    return np.stack(wins).astype(np.float32), names
