"""Record preprocessing of the CLEF method (../shared/reference/clef-method.md, "Views"):
interpolate short NaN gaps -> resample to the model rate -> band-pass 0.67-40 Hz (Butterworth,
zero-phase) -> cut into non-overlapping 10 s windows -> flat leads masked absent.

No z-score here: augmentation noise is added in mV to the band-passed signal, and the z-score
comes per view, after augmentation (:func:`zscore` is the helper for that step). The parameters
(:class:`PreprocessConfig`) travel with every store and model via :meth:`PreprocessConfig.to_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

from clef_core.data.errors import BadRecordError
from clef_core.data.leads import LEAD_INDEX, LEADS
from clef_core.data.records import EcgRecord

PREPROCESS_VERSION = 1
_META_KEYS = ("version", "leads", "units", "filter", "resampler")


@dataclass(frozen=True)
class PreprocessConfig:
    """The ``[preprocess]`` config section."""

    sample_rate: int = 500  # Hz, the model rate
    window_s: float = 10.0
    bandpass_low: float = 0.67  # Hz
    bandpass_high: float = 40.0  # Hz
    filter_order: int = 5  # Butterworth order, applied forward and backward (zero phase)
    max_nan_gap_s: float = 0.5  # longer NaN gaps make the record bad
    max_abs_mv: float = 30.0  # |value| beyond this is bad input (mis-scaled units?)
    flat_ptp_mv: float = 0.02  # a lead whose band-passed window spans less than this is flat

    def __post_init__(self) -> None:
        nyquist = self.sample_rate / 2
        if not (0 < self.bandpass_low < self.bandpass_high < nyquist):
            raise ValueError(
                f"preprocess: need 0 < bandpass_low < bandpass_high < sample_rate/2, "
                f"got {self.bandpass_low}, {self.bandpass_high}, {self.sample_rate}"
            )
        if self.filter_order < 1 or self.window_s <= 0 or self.max_nan_gap_s < 0:
            raise ValueError("preprocess: filter_order >= 1, window_s > 0, max_nan_gap_s >= 0 required")
        if not (0 < self.max_abs_mv <= 65_000) or self.flat_ptp_mv < 0:
            raise ValueError("preprocess: 0 < max_abs_mv <= 65000 (float16 range), flat_ptp_mv >= 0 required")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        """Everything a consumer needs to feed a model exactly what it was trained on."""
        return {
            "version": PREPROCESS_VERSION,
            **dataclasses.asdict(self),
            "leads": list(LEADS),
            "units": "mV",
            "filter": "butterworth-sos-zero-phase",
            "resampler": "scipy.signal.resample_poly",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; refuses another version or an unknown key."""
        if data.get("version") != PREPROCESS_VERSION:
            raise ValueError(f"preprocess version {data.get('version')!r}; this code reads {PREPROCESS_VERSION}")
        if list(data.get("leads", LEADS)) != list(LEADS):
            raise ValueError(f"preprocess lead order {data.get('leads')} differs from {list(LEADS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - set(_META_KEYS)
        if unknown:
            raise ValueError(f"preprocess: unknown key(s) {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Windows:
    """A record's windows: ``signals`` (n, 12, T) float32 mV (absent leads 0), ``lead_mask`` (n, 12)."""

    signals: np.ndarray
    lead_mask: np.ndarray
    start_s: np.ndarray


# --------------------------------------------------------------------------- steps


def nan_runs(x: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of NaNs in the 1-D array ``x``."""
    isnan = np.concatenate([[False], np.isnan(x), [False]])
    edges = np.flatnonzero(np.diff(isnan.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def fill_nan_gaps(x: np.ndarray, fs: float, max_gap_s: float, record_id: str) -> np.ndarray:
    """Linearly interpolate NaN gaps of at most ``max_gap_s`` in each row (edges: nearest value).

    A longer gap raises ``nan_gap``. Rows must contain at least one finite value.
    """
    limit = max_gap_s * fs
    out = x.copy()
    for row in range(x.shape[0]):
        runs = nan_runs(x[row])
        if not runs:
            continue
        longest = max(b - a for a, b in runs)
        if longest > limit:
            raise BadRecordError(record_id, "nan_gap", f"row {row}: {longest / fs:.2f} s of NaN > {max_gap_s} s")
        ok = ~np.isnan(x[row])
        t = np.arange(x.shape[1])
        out[row, ~ok] = np.interp(t[~ok], t[ok], x[row, ok])
    return out


def resample(x: np.ndarray, fs: float, target: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``) by the rational approximation of target/fs."""
    ratio = Fraction(target / fs).limit_denominator(1000)
    if ratio == 1:
        return x
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


@lru_cache(maxsize=16)
def _bandpass_sos(order: int, low: float, high: float, fs: float) -> np.ndarray:
    return butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def bandpass(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Zero-phase Butterworth band-pass (``sosfiltfilt``) along the last axis at the model rate."""
    sos = _bandpass_sos(cfg.filter_order, cfg.bandpass_low, cfg.bandpass_high, float(cfg.sample_rate))
    return sosfiltfilt(sos, x, axis=-1)


def cut_windows(x: np.ndarray, n: int) -> np.ndarray:
    """Non-overlapping windows of ``n`` samples, (leads, samples) -> (windows, leads, n); the tail is dropped."""
    count = x.shape[-1] // n
    return x[:, : count * n].reshape(x.shape[0], count, n).transpose(1, 0, 2)


def flat_leads(windows: np.ndarray, min_ptp: float) -> np.ndarray:
    """(windows, leads) bool: True where a lead's peak-to-peak in the window is below ``min_ptp``."""
    return np.ptp(windows, axis=-1) < min_ptp


def zscore(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-segment z-score along the last axis: (x - mean) / (std + eps). Applied per view after
    augmentation (method note, "Views"); a constant segment maps to 0."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / (x.std(axis=-1, keepdims=True) + eps)


# --------------------------------------------------------------------------- a whole record


def _finite_leads(record: EcgRecord) -> np.ndarray:
    """Indices of leads with at least one finite sample; none -> ``all_nan``."""
    finite = ~np.all(np.isnan(record.signal), axis=1)
    if not finite.any():
        raise BadRecordError(record.name, "all_nan", f"no finite sample in leads {record.leads}")
    return np.flatnonzero(finite)


def _check_record(record: EcgRecord, rows: np.ndarray, cfg: PreprocessConfig) -> None:
    if record.fs < 2 * cfg.bandpass_high:
        raise BadRecordError(
            record.name, "bad_sampling_rate", f"{record.fs} Hz cannot carry the {cfg.bandpass_high} Hz band"
        )
    if record.duration_s < cfg.window_s - 0.5 / record.fs:
        raise BadRecordError(record.name, "too_short", f"{record.duration_s:.2f} s < one {cfg.window_s} s window")
    peak = np.nanmax(np.abs(record.signal[rows]), axis=1)
    if peak.max() > cfg.max_abs_mv:
        lead = record.leads[rows[int(peak.argmax())]]
        raise BadRecordError(
            record.name, "out_of_range",
            f"lead {lead} reaches {peak.max():.1f} mV > {cfg.max_abs_mv} mV (units {record.units})",
        )


def preprocess_record(record: EcgRecord, cfg: PreprocessConfig) -> Windows:
    """A record -> its band-passed windows at the model rate in the canonical 12-lead layout.

    Leads that are all-NaN or flat in a window are masked absent (and zero); windows with no
    lead left are dropped; a record with none left is ``flat_line``.
    """
    rows = _finite_leads(record)
    _check_record(record, rows, cfg)
    x = fill_nan_gaps(record.signal[rows].astype(np.float64), record.fs, cfg.max_nan_gap_s, record.name)
    x = bandpass(resample(x, record.fs, cfg.sample_rate), cfg)
    T = cfg.window_samples
    if x.shape[-1] < T:  # the rational resampling ratio can lose a sample at the boundary
        x = np.pad(x, ((0, 0), (0, T - x.shape[-1])), mode="edge")
    win = cut_windows(x, T)
    present = ~flat_leads(win, cfg.flat_ptp_mv)
    keep = present.any(axis=1)
    if not keep.any():
        raise BadRecordError(record.name, "flat_line", f"every lead of {record.leads} is flat")
    lead_rows = [LEAD_INDEX[record.leads[r]] for r in rows]
    signals = np.zeros((int(keep.sum()), len(LEADS), T), dtype=np.float32)
    mask = np.zeros((int(keep.sum()), len(LEADS)), dtype=bool)
    signals[:, lead_rows] = win[keep] * present[keep][:, :, None]
    mask[:, lead_rows] = present[keep]
    return Windows(signals=signals, lead_mask=mask, start_s=np.flatnonzero(keep) * cfg.window_s)
