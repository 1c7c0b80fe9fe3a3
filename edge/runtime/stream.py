"""Raw single-lead samples -> model-ready 10 s windows, streaming with constant memory.

A record is cut into back-to-back windows ``[k*W, (k+1)*W)`` (W = ``window_s``; a last,
partial window is dropped). Each window is preprocessed from a raw *segment* that adds
``context_s`` seconds of signal on both sides (less at the record's ends): the segment is
resampled and zero-phase band-passed as a whole and the window is cut out of the middle, so
the filter's start-up behaviour stays in the context. Only ``W + 2*context`` seconds of raw
signal (plus the incoming chunk) are ever held, whatever the record length.

How close this is to filtering the whole record at once (what the training store does):
at a record's first and last window the segment edge *is* the record edge, where the whole-
record filter pads in the same way, and inside a record the only difference is the filter's
response to the segment's artificial ends, damped over ``context_s`` (the 0.67 Hz high-pass
edge rings for seconds). Measured on MIT-BIH 101 (30 min, 360 Hz -> 500 Hz, 180 windows),
max |difference| of the z-scored windows against whole-record scipy processing:
2 s of context 0.31, 5 s 6.5e-3, 10 s (the default) 2.0e-5; tests/test_edge_runtime.py
checks < 1e-3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .filters import SOSFilter
from .quality import SignalError, band_reason, prepare_samples, raw_reason, reason_code, refusal
from .resample import rate_ratio, resample
from .spec import PreprocessSpec


@dataclass
class Window:
    """One model input: ``x`` (T,) float32 z-scored, or ``x=None`` with ``skipped`` saying why
    (``"<reason>: <detail>"``, reason one of edge/runtime/quality.py's WINDOW_REASONS)."""

    start_s: float
    x: np.ndarray | None
    skipped: str | None = None


def zscore(x: np.ndarray, eps: float) -> np.ndarray:
    """``(x - mean) / max(std, eps)``, as the training views (clef_core.data.augment.zscore)."""
    return ((x - x.mean()) / max(float(x.std()), eps)).astype(np.float32)


class Preprocessor:
    """The numpy preprocessing of ``preprocess.json`` for one input sample rate."""

    def __init__(self, spec: PreprocessSpec, fs_in: float) -> None:
        self.spec = spec
        self.fs_in = float(fs_in)
        self.up, self.down = rate_ratio(self.fs_in, spec.sample_rate)
        w_in = spec.window_s * self.fs_in
        if abs(w_in - round(w_in)) > 1e-6 or round(w_in) % self.down:
            raise ValueError(f"a {spec.window_s:g} s window at {fs_in:g} Hz is not a whole number of "
                             f"samples at {spec.sample_rate:g} Hz")
        self.window_in = int(round(w_in))
        # context rounded up to whole multiples of `down` so segment starts stay on the output grid
        c = int(np.ceil(spec.context_s * self.fs_in / self.down)) * self.down
        self.context_in = c
        self._filters: dict[float, SOSFilter] = {}

    def _filter(self, rate: float) -> SOSFilter:
        if rate not in self._filters:
            f = self.spec.filter_at(rate)
            self._filters[rate] = SOSFilter(f.sos, f.zi, f.padlen)
        return self._filters[rate]

    def signal(self, seg: np.ndarray) -> np.ndarray:
        """Resample and band-pass a raw segment (all steps but the z-score), in the spec's order."""
        y, rate = np.asarray(seg, dtype=np.float64), self.fs_in
        for step in self.spec.steps:
            if step == "resample":
                y, rate = resample(y, rate, self.spec.sample_rate), self.spec.sample_rate
            elif step == "bandpass":
                y = self._filter(rate).filtfilt(y)
        if rate != self.spec.sample_rate:
            y = resample(y, rate, self.spec.sample_rate)
        return y

    def window(self, seg: np.ndarray, seg_start: int, win_start: int) -> tuple[np.ndarray | None, str | None]:
        """The z-scored window starting at raw sample ``win_start`` inside ``seg`` (raw from
        ``seg_start``), or ``(None, reason)`` by the shared quality rule (edge/runtime/quality.py)."""
        rule = self.spec.quality
        samples = prepare_samples(seg, self.fs_in, rule)
        lo = win_start - seg_start
        reason = raw_reason(samples, lo, lo + self.window_in, self.fs_in, rule, offset=seg_start)
        if reason:
            return None, reason
        y = self.signal(samples.filled)
        off = lo * self.up // self.down
        band = y[off : off + self.spec.window_samples]
        reason = band_reason(band, self.spec.sample_rate, rule)
        if reason:
            return None, reason
        return zscore(band, self.spec.zscore_eps), None


def iter_windows(chunks: Iterable[np.ndarray], fs_in: float, spec: PreprocessSpec) -> Iterator[Window]:
    """Model-ready windows from a stream of raw 1-D chunks (any sizes) of one lead at ``fs_in`` Hz.

    A window that fails the quality rule (edge/runtime/quality.py) is yielded with ``skipped``;
    :class:`~.quality.SignalError` when the stream is shorter than one window or, at its end,
    when no window survived (the store's refusal of the same record).
    """
    pre = Preprocessor(spec, fs_in)
    w, c = pre.window_in, pre.context_in
    buf = np.zeros(0)
    buf_start = 0  # absolute index of buf[0]
    k = 0  # next window
    counts: Counter[str] = Counter()  # skipped windows by reason
    finite = False  # any finite sample seen (else the record is all_nan, as in the store)
    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.float64).reshape(-1)
        finite = finite or bool(np.isfinite(chunk).any())
        buf = np.concatenate([buf, chunk])
        while buf_start + buf.size >= (k + 1) * w + c:
            yield _counted(_emit(pre, buf, buf_start, k), counts)
            k += 1
            keep = max(0, k * w - c)
            buf, buf_start = buf[keep - buf_start :], keep
    n = buf_start + buf.size
    while (k + 1) * w <= n:
        yield _counted(_emit(pre, buf, buf_start, k), counts)
        k += 1
    if k == 0:
        raise SignalError(f"too_short: {n / fs_in:.2f} s < one {spec.window_s:g} s window")
    if not finite:
        raise SignalError(f"all_nan: no finite sample in {n / fs_in:.2f} s")
    if sum(counts.values()) == k:
        reason, detail = refusal(counts, k)
        raise SignalError(f"{reason}: {detail}")


def _counted(win: Window, counts: Counter[str]) -> Window:
    if win.skipped:
        counts[reason_code(win.skipped)] += 1
    return win


def _emit(pre: Preprocessor, buf: np.ndarray, buf_start: int, k: int) -> Window:
    w, c = pre.window_in, pre.context_in
    lo = max(0, k * w - c)
    hi = min(buf_start + buf.size, (k + 1) * w + c)
    seg = buf[lo - buf_start : hi - buf_start]
    x, skipped = pre.window(seg, lo, k * w)
    return Window(start_s=k * w / pre.fs_in, x=x, skipped=skipped)


def windows_of(signal: np.ndarray, fs_in: float, spec: PreprocessSpec, chunk_s: float = 60.0) -> Iterator[Window]:
    """:func:`iter_windows` over an in-memory 1-D signal, fed in ``chunk_s`` pieces."""
    signal = np.asarray(signal).reshape(-1)
    step = max(1, int(chunk_s * fs_in))
    return iter_windows((signal[i : i + step] for i in range(0, signal.size, step)), fs_in, spec)
