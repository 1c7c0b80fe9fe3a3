"""MIT-BIH atrial fibrillation at the device's granularity: one label per back-to-back 10 s window.

The rhythm in force at a sample is the last rhythm annotation before it (``.atr`` aux notes such
as ``(N``, ``(AFIB``, ``(AFL``; a record starts in the rhythm of its first note). A window is
AF (1) when AFIB holds over all of it and non-AF (0) when AFIB holds nowhere in it; windows that
straddle a rhythm change are left out, so every label is unambiguous. The MLII lead is resampled
to the model rate and band-passed over the whole record (as the store does, and as
:mod:`clef_core.evaluation.mitdb` does for beats), cut into back-to-back windows starting at 0,
as the device runtime cuts them, judged by the store's and device's signal-quality rule (a
window the device would skip is left out and counted, ``quality_skipped``) and z-scored per
window. At most ``per_class`` windows per record and class are kept (a uniform draw without
replacement, seeded per record).

Of the 22 DS1 records here, 201 and 203 hold AF episodes: a probe fitted on them is a real but
small AF detector (two patients' AF), useful as the labelled output of the edge path, not as a
validated classifier.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clef_core.data.preprocess import PreprocessConfig, window_reasons, zscore
from clef_core.evaluation.mitdb import read_lead, rhythm_share


@dataclasses.dataclass
class RhythmWindows:
    """Windows ``x`` (N, T) z-scored, ``af`` (N,) 0/1, ``records`` (N,) as groups, ``start_s`` (N,)
    and per-record counts of the pure AF / non-AF windows available and used."""

    x: np.ndarray
    af: np.ndarray
    records: np.ndarray
    start_s: np.ndarray
    counts: dict[str, dict[str, int]]


def load_af_windows(records: Sequence[Path], cfg: PreprocessConfig, lead: str = "II", per_class: int = 40,
                    seed: int = 0) -> RhythmWindows:
    """Pure AF / non-AF 10 s windows of ``records`` (see the module docstring)."""
    xs, ys, groups, starts_s = [], [], [], []
    counts: dict[str, dict[str, int]] = {}
    T = cfg.window_samples
    for path in records:
        rec, signal, ann = read_lead(path, lead)
        n_raw = rec.signal.shape[1]
        win_raw = int(round(cfg.window_s * rec.fs))
        starts = np.arange(0, n_raw - win_raw + 1, win_raw)
        frac = rhythm_share(ann.rhythm_changes, n_raw, starts, win_raw)
        win, reasons = window_reasons(np.asarray(signal, np.float64)[None], rec.fs, cfg)
        usable = np.zeros(len(starts), dtype=bool)
        usable[: len(win)] = reasons[: len(starts), 0] == None  # noqa: E711 (elementwise)
        rng = np.random.default_rng([zlib.crc32(rec.name.encode()), seed])
        chosen = []
        for pure in ((frac == 0.0) & usable, (frac == 1.0) & usable):
            idx = np.flatnonzero(pure)
            if per_class and len(idx) > per_class:
                idx = np.sort(rng.choice(idx, per_class, replace=False))
            chosen.append(idx)
        sel = np.sort(np.concatenate(chosen)).astype(np.int64)
        xs.append(zscore(win[sel, 0].reshape(-1, T)))
        ys.append((frac[sel] == 1.0).astype(np.float64))
        groups.append(np.full(len(sel), rec.name))
        starts_s.append(starts[sel] / rec.fs)
        counts[rec.name] = {"af_available": int((frac == 1.0).sum()), "non_af_available": int((frac == 0.0).sum()),
                            "mixed_left_out": int(((frac > 0) & (frac < 1)).sum()),
                            "quality_skipped": int((~usable).sum()),
                            "af_used": int(ys[-1].sum()), "non_af_used": int(len(sel) - ys[-1].sum())}
    return RhythmWindows(
        x=np.concatenate(xs).astype(np.float32) if xs else np.zeros((0, T), np.float32),
        af=np.concatenate(ys) if ys else np.zeros(0),
        records=np.concatenate(groups) if groups else np.zeros(0, str),
        start_s=np.concatenate(starts_s) if starts_s else np.zeros(0),
        counts=counts,
    )
