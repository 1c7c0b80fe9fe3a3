"""Hand-made single-lead ECG features: the no-deep-learning baseline of ``clef study``.

Per window (one lead, band-passed, any rate >= 50 Hz), 46 numbers:

* rhythm (6): heart rate, SD / RMSSD / coefficient of variation of the RR intervals, share of
  successive RR differences > 50 ms, number of detected beats;
* median beat (32): the median of the beats (R peak -0.25 s .. +0.55 s, each beat z-scored by the
  window's SD) sampled at 32 equally spaced times: P, QRS, ST and T amplitudes by position;
* morphology (4): QRS width (time the median beat's |amplitude| stays above 30 % of its R peak
  around R), T-wave peak amplitude and its latency after R (0.1-0.5 s), ST level at R + 80 ms;
* spectrum (4): share of power in 0.5-3, 3-8, 8-15 and 15-40 Hz (Welch).

R peaks: local maxima of the squared first difference of the 5-15 Hz band (smoothed over 50 ms), at least 0.3 s apart,
above 30 % of its 99th percentile (a Pan-Tompkins-like energy detector). A window without two
beats gets NaN rhythm features; :func:`features` then fills NaN with the column median.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, filtfilt, find_peaks, welch

N_TEMPLATE = 32
PRE_S, POST_S = 0.25, 0.55
BANDS = ((0.5, 3.0), (3.0, 8.0), (8.0, 15.0), (15.0, 40.0))
N_FEATURES = 6 + N_TEMPLATE + 4 + len(BANDS)


def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of R peaks in one window ``x`` (T,)."""
    b, a = butter(2, [5.0, min(15.0, 0.45 * fs)], btype="band", fs=fs)  # the QRS band
    qrs = filtfilt(b, a, x)
    energy = np.diff(qrs, prepend=qrs[0]) ** 2
    k = max(int(0.05 * fs), 1)
    smooth = np.convolve(energy, np.ones(k) / k, mode="same")
    top = np.percentile(smooth, 99)
    if top <= 0:
        return np.zeros(0, dtype=int)
    found, _ = find_peaks(smooth, height=0.3 * top, distance=max(int(0.3 * fs), 1))
    # move each energy peak onto the largest |amplitude| within +-60 ms
    w = max(int(0.06 * fs), 1)
    return np.array([i - w + int(np.argmax(np.abs(x[max(i - w, 0): i + w + 1]))) + (w - min(i, w))
                     for i in found], dtype=int)


def window_features(x: np.ndarray, fs: float) -> np.ndarray:
    """The 46 features of one window (NaN where undefined)."""
    x = np.asarray(x, np.float64)
    out = np.full(N_FEATURES, np.nan)
    peaks = r_peaks(x, fs)
    if len(peaks) >= 2:
        rr = np.diff(peaks) / fs
        d = np.diff(rr)
        out[:6] = [60 / rr.mean(), rr.std(), np.sqrt(np.mean(d**2)) if len(d) else 0.0, rr.std() / rr.mean(),
                   np.mean(np.abs(d) > 0.05) if len(d) else 0.0, len(peaks)]
    pre, post = int(PRE_S * fs), int(POST_S * fs)
    beats = [x[p - pre: p + post] for p in peaks if p - pre >= 0 and p + post <= len(x)]
    if beats:
        sd = x.std() or 1.0
        median = np.median(np.stack(beats), axis=0) / sd
        grid = np.linspace(0, len(median) - 1, N_TEMPLATE)
        out[6:6 + N_TEMPLATE] = np.interp(grid, np.arange(len(median)), median)
        r = median[pre]
        above = np.abs(median) > 0.3 * abs(r) if r != 0 else np.zeros(len(median), bool)
        left = pre
        while left > 0 and above[left - 1]:
            left -= 1
        right = pre
        while right < len(median) - 1 and above[right + 1]:
            right += 1
        t_lo, t_hi = pre + int(0.1 * fs), min(pre + int(0.5 * fs), len(median))
        t_seg = median[t_lo:t_hi]
        t_idx = int(np.argmax(np.abs(t_seg))) if len(t_seg) else 0
        st = median[min(pre + int(0.08 * fs), len(median) - 1)]
        out[6 + N_TEMPLATE: 10 + N_TEMPLATE] = [(right - left + 1) / fs, t_seg[t_idx] if len(t_seg) else np.nan,
                                                (t_lo + t_idx - pre) / fs, st]
    freqs, power = welch(x, fs=fs, nperseg=min(len(x), int(4 * fs)))
    total = power[(freqs >= BANDS[0][0]) & (freqs < BANDS[-1][1])].sum()
    if total > 0:
        out[10 + N_TEMPLATE:] = [power[(freqs >= lo) & (freqs < hi)].sum() / total for lo, hi in BANDS]
    return out


def features(x: np.ndarray, fs: float) -> np.ndarray:
    """(N, 46) features of windows ``x`` (N, T); NaN filled with each column's median (0 when all NaN)."""
    feats = np.stack([window_features(w, fs) for w in np.asarray(x)])
    med = np.nanmedian(np.where(np.isfinite(feats), feats, np.nan), axis=0) if len(feats) else np.zeros(N_FEATURES)
    med = np.where(np.isfinite(med), med, 0.0)
    return np.where(np.isfinite(feats), feats, med).astype(np.float32)
