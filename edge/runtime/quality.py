"""Signal quality, per window: THE rule shared by the training store and the device.

``clef_core.data.preprocess`` (the store, hence training and evaluation) and the device
runtime (edge/runtime/stream.py) both call this module, so a lead-window the store leaves out is
a window the device skips, for the same reason. It is numpy-only so the runtime can carry it.

A window of one lead is skipped, with its reason, when it holds

* ``out_of_range``: a raw sample beyond ``max_abs_mv`` (30 mV: an ECG never reaches it; an
  electrode pop or a signal in uV / ADC units does). Such samples are set to NaN *before*
  filtering, so the excursion does not ring into the neighbouring windows;
* ``nan_gap``: a run of NaN (or out-of-range) samples longer than ``max_nan_gap_s``. Every run
  is interpolated linearly before filtering (shorter ones are kept as such), so a gap costs
  only the windows it touches;
* ``flat``: a band-passed peak-to-peak below ``flat_ptp_mv`` (lead off);
* ``noise``: random noise, not ECG: a band-passed window whose kurtosis is below
  ``kurtosis_max`` (QRS complexes are sparse spikes: ECG windows score ~4-40; Gaussian or uniform
  noise ~3) *and* whose power in ``hf_band_hz`` (15-40 Hz) is more than ``hf_fraction_min`` of the
  0.67-40 Hz band (ECG keeps most power below 15 Hz; white noise spreads it evenly, ~0.6).

A record is refused as a whole only when none of its windows survives (:func:`refusal`).

The noise figures are computed on the window without its first and last 0.5 s, where the
zero-phase filter's start-up at a record's ends can put a spike into pure noise.
Measured on this project's data with the defaults (4.0, 15-40 Hz, 0.4): 0 of 8,259 real ECG
windows flagged (MIT-BIH DS1, both leads, including AF and ventricular flutter; the 25 CinC
12-lead records and PTB s0010_re, every non-flat lead); of 10 min of white noise at three
seeds, every window of Gaussian, uniform and integer noise flagged and 178 of 180 of Laplace
noise (band-passing makes any white noise near-Gaussian). Not caught: real recorded noise,
baseline wander or muscle artifact (MIT-BIH NST bw / ma: 0-6 % of windows flagged); a record
of it is embedded like ECG.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

WINDOW_REASONS = ("out_of_range", "nan_gap", "flat", "noise")  # checked in this order
RECORD_REASON = {"out_of_range": "out_of_range", "nan_gap": "nan_gap", "flat": "flat_line", "noise": "not_ecg"}


class SignalError(ValueError):
    """The signal is not something the model may be run on; the caller prefixes the record."""


@dataclass(frozen=True)
class NoiseRule:
    kurtosis_max: float = 4.0
    hf_band_hz: tuple[float, float] = (15.0, 40.0)
    hf_fraction_min: float = 0.4
    band_hz: tuple[float, float] = (0.67, 40.0)
    edge_s: float = 0.5  # left out at both ends of the window


@dataclass(frozen=True)
class QualityRule:
    """The thresholds (``[preprocess]`` keys on the training side, ``preprocess.json`` on the device)."""

    max_abs_mv: float = 30.0
    max_nan_gap_s: float = 0.5
    flat_ptp_mv: float = 0.02
    noise: NoiseRule = field(default_factory=NoiseRule)


@dataclass
class Samples:
    """A raw signal made filterable: ``filled`` (no NaN), and where it was out of range or in a long gap."""

    filled: np.ndarray
    out_of_range: np.ndarray  # bool, same shape
    long_gap: np.ndarray  # bool, same shape
    peak: np.ndarray  # |raw|, NaN as 0 (for the message)

    def row(self, i: int) -> Samples:
        """Row ``i`` of 2-D samples (leads, samples)."""
        return Samples(self.filled[i], self.out_of_range[i], self.long_gap[i], self.peak[i])


def _fill_row(x: np.ndarray, max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    bad = np.isnan(x)
    long_gap = np.zeros(x.shape, dtype=bool)
    if not bad.any():
        return x, long_gap
    if bad.all():
        long_gap[:] = x.size > max_gap
        return np.zeros_like(x), long_gap
    edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if b - a > max_gap:
            long_gap[a:b] = True
    good = np.flatnonzero(~bad)
    out = x.copy()
    out[bad] = np.interp(np.flatnonzero(bad), good, x[good])  # edges: the nearest value
    return out, long_gap


def prepare_samples(raw: np.ndarray, fs: float, rule: QualityRule) -> Samples:
    """Out-of-range samples -> NaN, then every NaN run interpolated; rows along the last axis."""
    x = np.array(raw, dtype=np.float64)
    peak = np.abs(np.nan_to_num(x, nan=0.0))
    oor = peak > rule.max_abs_mv
    x[oor] = np.nan
    rows = x.reshape(-1, x.shape[-1])
    pairs = [_fill_row(row, rule.max_nan_gap_s * fs) for row in rows]
    filled = np.stack([p[0] for p in pairs]).reshape(x.shape)
    long_gap = np.stack([p[1] for p in pairs]).reshape(x.shape)
    return Samples(filled, oor, long_gap, peak)


def raw_reason(s: Samples, lo: int, hi: int, fs: float, rule: QualityRule, offset: int = 0) -> str | None:
    """Why raw samples ``[lo, hi)`` of the 1-D :class:`Samples` ``s`` (sample 0 = record sample
    ``offset``) are unusable, or None."""
    if s.out_of_range[lo:hi].any():
        i = lo + int(s.peak[lo:hi].argmax())
        return (f"out_of_range: {s.peak[i]:.1f} mV at {(offset + i) / fs:.2f} s > {rule.max_abs_mv:g} mV "
                f"(mis-scaled units? the model takes mV)")
    if s.long_gap[lo:hi].any():
        n = int(s.long_gap[lo:hi].sum())
        return f"nan_gap: {n / fs:.2f} s of NaN in the window, a gap longer than {rule.max_nan_gap_s:g} s"
    return None


def noise_reason(band: np.ndarray, rate: float, rule: NoiseRule) -> str | None:
    """Why the band-passed window ``band`` at ``rate`` Hz is random noise rather than ECG, or None."""
    edge = int(rule.edge_s * rate)  # the zero-phase filter's start-up at a record's ends is not the signal
    x = np.asarray(band, dtype=np.float64)[edge : len(band) - edge]
    x = x - float(np.mean(x))
    var = float(np.mean(x * x))
    if var <= 0:
        return None  # flat: reported as flat, not as noise
    kurtosis = float(np.mean(x**4)) / var**2
    if kurtosis >= rule.kurtosis_max:
        return None
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1.0 / rate)
    total = power[(f >= rule.band_hz[0]) & (f <= rule.band_hz[1])].sum()
    high = power[(f >= rule.hf_band_hz[0]) & (f <= rule.hf_band_hz[1])].sum()
    frac = float(high / total) if total > 0 else 0.0
    if frac <= rule.hf_fraction_min:
        return None
    return (f"noise: kurtosis {kurtosis:.2f} < {rule.kurtosis_max:g} and {frac:.0%} of the power in "
            f"{rule.hf_band_hz[0]:g}-{rule.hf_band_hz[1]:g} Hz > {rule.hf_fraction_min:.0%}")


def band_reason(band: np.ndarray, rate: float, rule: QualityRule) -> str | None:
    """Why the band-passed window ``band`` (1-D, model rate) is unusable: flat or noise; or None."""
    ptp = float(np.ptp(band))
    if ptp < rule.flat_ptp_mv:
        return f"flat: peak-to-peak {ptp:.3f} mV < {rule.flat_ptp_mv:g} mV (lead off?)"
    return noise_reason(band, rate, rule.noise)


def reason_code(reason: str) -> str:
    """``"nan_gap: 1.00 s ..."`` -> ``"nan_gap"``."""
    return reason.split(":", 1)[0]


def refusal(counts: Mapping[str, int], n_windows: int) -> tuple[str, str]:
    """``(record reason, detail)`` for a record none of whose ``n_windows`` windows survived:
    the most frequent window reason (ties in :data:`WINDOW_REASONS` order) names the record."""
    top = max(WINDOW_REASONS, key=lambda r: (counts.get(r, 0), -WINDOW_REASONS.index(r)))
    parts = ", ".join(f"{r} {counts[r]}" for r in WINDOW_REASONS if counts.get(r))
    return RECORD_REASON[top], f"no usable window of {n_windows} ({parts})"


def summary(counts: Mapping[str, int], n_windows: int) -> str:
    """``"178 of 180 windows used; 2 skipped (1.1 %): nan_gap 1, noise 1"``."""
    skipped = sum(counts.values())
    text = f"{n_windows - skipped} of {n_windows} windows used"
    if skipped:
        parts = ", ".join(f"{r} {counts[r]}" for r in WINDOW_REASONS if counts.get(r))
        text += f"; {skipped} skipped ({100 * skipped / max(n_windows, 1):.1f} %): {parts}"
    return text
