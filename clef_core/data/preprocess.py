"""Record preprocessing of the CLEF method (../shared/reference/clef-method.md, "Views"):
out-of-range samples and NaN gaps interpolated -> resample to the model rate -> band-pass
0.67-40 Hz (Butterworth, zero-phase) -> cut into non-overlapping 10 s windows -> each lead of
each window judged by the signal-quality rule the device also runs (edge/runtime/quality.py:
out of range, long NaN gap, flat, noise); a failing lead is masked absent, a window with no lead
left is skipped and counted by reason, and a record is refused only when no window survives.

No z-score here: augmentation noise is added in mV to the band-passed signal, and the z-score
comes per view, after augmentation (:func:`zscore` is the helper for that step). The parameters
(:class:`PreprocessConfig`) travel with every store and model via :meth:`PreprocessConfig.to_dict`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

from clef_core.config import require
from clef_core.data.errors import BadRecordError
from edge.runtime.quality import (
    WINDOW_REASONS,
    NoiseRule,
    QualityRule,
    band_reason,
    prepare_samples,
    raw_reason,
    reason_code,
    refusal,
)
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
    max_nan_gap_s: float = 0.5  # a longer NaN gap skips the windows it touches
    max_abs_mv: float = 30.0  # |value| beyond this skips its window (electrode pop, mis-scaled units?)
    flat_ptp_mv: float = 0.02  # a lead whose band-passed window spans less than this is flat
    noise_kurtosis_max: float = 4.0  # noise: kurtosis below this ...
    noise_hf_low_hz: float = 15.0  # ... and more than noise_hf_fraction_min of the band's power
    noise_hf_fraction_min: float = 0.4  # between noise_hf_low_hz and bandpass_high

    def __post_init__(self) -> None:
        require(0 < self.bandpass_low < self.bandpass_high < self.sample_rate / 2,
                "preprocess.bandpass_low/bandpass_high/sample_rate", (self.bandpass_low, self.bandpass_high, self.sample_rate),
                "0 < bandpass_low < bandpass_high < sample_rate/2")
        require(self.filter_order >= 1, "preprocess.filter_order", self.filter_order, ">= 1")
        require(self.window_s > 0, "preprocess.window_s", self.window_s, "> 0")
        require(self.max_nan_gap_s >= 0, "preprocess.max_nan_gap_s", self.max_nan_gap_s, ">= 0")
        require(0 < self.max_abs_mv <= 65_000, "preprocess.max_abs_mv", self.max_abs_mv, "in (0, 65000] (float16 range)")
        require(self.flat_ptp_mv >= 0, "preprocess.flat_ptp_mv", self.flat_ptp_mv, ">= 0")
        require(self.bandpass_low < self.noise_hf_low_hz < self.bandpass_high, "preprocess.noise_hf_low_hz",
                self.noise_hf_low_hz, "between bandpass_low and bandpass_high")
        require(0 <= self.noise_hf_fraction_min <= 1, "preprocess.noise_hf_fraction_min", self.noise_hf_fraction_min, "in [0, 1]")

    @property
    def quality(self) -> QualityRule:
        """The per-window signal-quality rule, shared with the device (edge/runtime/quality.py)."""
        noise = NoiseRule(kurtosis_max=self.noise_kurtosis_max, hf_band_hz=(self.noise_hf_low_hz, self.bandpass_high),
                          hf_fraction_min=self.noise_hf_fraction_min, band_hz=(self.bandpass_low, self.bandpass_high))
        return QualityRule(self.max_abs_mv, self.max_nan_gap_s, self.flat_ptp_mv, noise)

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
    """A record's windows: ``signals`` (n, 12, T) float32 mV (absent leads 0), ``lead_mask`` (n, 12);
    ``skipped`` counts the windows left out by reason, ``lead_skipped`` the lead-windows masked."""

    signals: np.ndarray
    lead_mask: np.ndarray
    start_s: np.ndarray
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    lead_skipped: dict[str, int] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- steps


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


def _check_record(record: EcgRecord, cfg: PreprocessConfig) -> None:
    if record.fs < 2 * cfg.bandpass_high:
        raise BadRecordError(
            record.name, "bad_sampling_rate", f"{record.fs} Hz cannot carry the {cfg.bandpass_high} Hz band"
        )
    if record.duration_s < cfg.window_s - 0.5 / record.fs:
        raise BadRecordError(record.name, "too_short", f"{record.duration_s:.2f} s < one {cfg.window_s} s window")


def window_reasons(raw: np.ndarray, fs: float, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(band-passed windows (n, leads, T), reasons (n, leads))`` of the raw rows ``raw`` (leads,
    samples) at ``fs``: a reason (edge/runtime/quality.py) where the lead-window is unusable, else None."""
    rule = cfg.quality
    samples = prepare_samples(raw, fs, rule)
    x = bandpass(resample(samples.filled, fs, cfg.sample_rate), cfg)
    T = cfg.window_samples
    if x.shape[-1] < T:  # the rational resampling ratio can lose a sample at the boundary
        x = np.pad(x, ((0, 0), (0, T - x.shape[-1])), mode="edge")
    win = cut_windows(x, T)
    reasons = np.full(win.shape[:2], None, dtype=object)
    for k in range(win.shape[0]):
        lo, hi = int(round(k * cfg.window_s * fs)), int(round((k + 1) * cfg.window_s * fs))
        for lead in range(win.shape[1]):
            reasons[k, lead] = (raw_reason(samples.row(lead), lo, hi, fs, rule)
                                or band_reason(win[k, lead], cfg.sample_rate, rule))
    return win, reasons


def preprocess_record(record: EcgRecord, cfg: PreprocessConfig) -> Windows:
    """A record -> its band-passed windows at the model rate in the canonical 12-lead layout.

    Leads that are all-NaN, or fail the quality rule in a window, are masked absent (and zero);
    windows with no lead left are skipped and counted by reason; a record with none left is
    refused with the most frequent reason (``flat_line``, ``nan_gap``, ``out_of_range``, ``not_ecg``).
    """
    rows = _finite_leads(record)
    _check_record(record, cfg)
    win, reasons = window_reasons(record.signal[rows].astype(np.float64), record.fs, cfg)
    present = reasons == None  # noqa: E711 (elementwise on an object array)
    keep = present.any(axis=1)
    lead_skipped = Counter(reason_code(r) for r in reasons[~present])
    skipped = Counter(_window_reason(reasons[k]) for k in np.flatnonzero(~keep))
    if not keep.any():
        reason, detail = refusal(skipped, len(keep))
        raise BadRecordError(record.name, reason, f"leads {', '.join(record.leads)}: {detail}")
    T = cfg.window_samples
    lead_rows = [LEAD_INDEX[record.leads[r]] for r in rows]
    signals = np.zeros((int(keep.sum()), len(LEADS), T), dtype=np.float32)
    mask = np.zeros((int(keep.sum()), len(LEADS)), dtype=bool)
    signals[:, lead_rows] = win[keep] * present[keep][:, :, None]
    mask[:, lead_rows] = present[keep]
    return Windows(signals=signals, lead_mask=mask, start_s=np.flatnonzero(keep) * cfg.window_s,
                   skipped=dict(skipped), lead_skipped=dict(lead_skipped))


def _window_reason(lead_reasons: np.ndarray) -> str:
    """A skipped window's reason: its leads' most frequent one (ties in WINDOW_REASONS order)."""
    codes = Counter(reason_code(r) for r in lead_reasons)
    return max(WINDOW_REASONS, key=lambda r: (codes.get(r, 0), -WINDOW_REASONS.index(r)))
