"""Noise sources for the CLEF augmentations: recorded baseline wander and muscle artifact, generated
electrode motion.

The CLEF reference code adds recorded noise from PhysioNet's ECG/PPG simulator. Here the real noise
is the MIT-BIH Noise Stress Test Database (Moody, Muldrow & Mark 1984; PhysioNet ``nstdb``):
records ``bw`` (baseline wander) and ``ma`` (muscle artifact), 360 Hz, 2 channels, 30 min, in mV.
They are read with wfdb, resampled to the model rate with a polyphase filter
(``scipy.signal.resample_poly``) and kept in memory as float32 (about 7 MB per record at 500 Hz).

The third NST record, ``em`` (electrode motion), is not available, so electrode motion is always
generated (:func:`generate_em`). When the recorded ``bw``/``ma`` cannot be found, documented
generators replace them too (:func:`generate_bw`, :func:`generate_ma`), a warning is logged once,
and :meth:`NoiseBank.describe` says which source each kind came from, for provenance.

A sample is a random window of one channel (recorded) or a fresh realisation (generated), with its
mean removed and scaled so that its RMS is exactly the requested value:
``n = (w - mean(w)) * rms / sqrt(mean((w - mean(w))^2))``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NOISE_KINDS = ("bw", "ma", "em")
RECORDED_KINDS = ("bw", "ma")  # the NST records available; "em" is always generated
NST_RATE = 360  # Hz, MIT-BIH Noise Stress Test Database
NOISE_DIR_ENV = "CLEF_NOISE_DIR"
GENERATOR_VERSION = 1  # bump when a generator below changes its output

_WARNED: set[str] = set()


# --------------------------------------------------------------------------------------------
# Where the recorded noise lives


def default_noise_dirs() -> list[Path]:
    """Automatic search order: ``$CLEF_NOISE_DIR`` when set, then ``<repo>/../shared/data/noise``."""
    import clef_core

    candidates = []
    env = os.environ.get(NOISE_DIR_ENV, "")
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(Path(clef_core.__file__).resolve().parents[1].parent / "shared" / "data" / "noise")
    return candidates


def _has_records(folder: Path) -> bool:
    return any((folder / f"{kind}.hea").is_file() for kind in RECORDED_KINDS)


def find_noise_dir(configured: str | Path | None, candidates: list[Path] | None = None) -> Path | None:
    """Resolve the ``views.noise_dir`` setting.

    ``None``: do not look (generators only). ``""``: the first of ``candidates`` (default
    :func:`default_noise_dirs`) that holds a ``bw.hea`` or ``ma.hea``; ``None`` if none does.
    Anything else is an explicit folder, which must exist.
    """
    if configured is None:
        return None
    if str(configured) != "":
        folder = Path(configured).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"views.noise_dir: folder not found: {folder}")
        return folder
    for folder in default_noise_dirs() if candidates is None else candidates:
        if folder.is_dir() and _has_records(folder):
            return folder
    return None


# --------------------------------------------------------------------------------------------
# Recorded noise


def _rate_ratio(source_fs: float, fs: float) -> tuple[int, int]:
    """``fs / source_fs`` as a reduced fraction ``up / down`` for ``resample_poly``."""
    ratio = Fraction(fs).limit_denominator(1000) / Fraction(source_fs).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


@lru_cache(maxsize=8)
def load_recorded(folder: str, kind: str, fs: float) -> np.ndarray:
    """Record ``kind`` of ``folder`` as a read-only float32 array (channels, samples) in mV at ``fs``.

    Cached per process: the bank and every worker forked after it share one copy.
    """
    import wfdb
    from scipy.signal import resample_poly

    path = Path(folder) / kind
    try:
        rec = wfdb.rdrecord(str(path))
    except Exception as exc:  # wfdb raises many types for a bad record
        raise ValueError(f"noise record {path}: cannot be read: {exc}") from exc
    units = {u.lower() for u in (rec.units or [])}
    if units and units != {"mv"}:
        raise ValueError(f"noise record {path}: units {sorted(units)}, expected mV")
    signal = np.asarray(rec.p_signal, dtype=np.float64).T
    if not np.isfinite(signal).all():
        raise ValueError(f"noise record {path}: contains NaN or infinite samples")
    up, down = _rate_ratio(rec.fs, fs)
    out = (resample_poly(signal, up, down, axis=-1) if (up, down) != (1, 1) else signal).astype(np.float32)
    out.flags.writeable = False
    return out


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Generators (unit-free: the bank scales every sample to the requested RMS)


def _spectral_noise(length: int, fs: float, rng: np.random.Generator, lo: float, hi: float, slope: float) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``f**-slope`` on ``[lo, hi]`` Hz, zero elsewhere."""
    n_fft = max(length, 2)
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / fs)
    band = (freqs >= lo) & (freqs <= hi)
    if not band.any():  # window too short to resolve the band: take the lowest non-DC bin
        band[min(1, len(freqs) - 1)] = True
    mag = np.zeros_like(freqs)
    mag[band] = np.maximum(freqs[band], freqs[1] if len(freqs) > 1 else 1.0) ** (-slope)
    spectrum = mag * (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs)))
    return np.fft.irfft(spectrum, n=n_fft)[:length]


def generate_bw(length: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Baseline wander: Gaussian noise with a 1/f amplitude spectrum on 0.05-1 Hz.

    The band of respiration (0.15-0.4 Hz) and slow electrode/posture drift, which is where the
    NST ``bw`` record has almost all its power (Moody et al. 1984; Clifford et al. 2006, ch. 3).
    """
    return _spectral_noise(length, fs, rng, 0.05, 1.0, slope=1.0)


def generate_ma(length: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Muscle artifact (EMG): white noise band-limited to 5-150 Hz (capped at 0.45 fs), with a
    slowly varying amplitude envelope ``0.3 + |e(t)|`` (e: 0.1-1 Hz Gaussian noise of unit RMS)
    so that bursts of muscle activity come and go, as in the NST ``ma`` record.
    """
    carrier = _spectral_noise(length, fs, rng, 5.0, min(150.0, 0.45 * fs), slope=0.0)
    envelope = _spectral_noise(length, fs, rng, 0.1, 1.0, slope=0.0)
    envelope /= max(float(np.sqrt(np.mean(envelope**2))), 1e-12)
    return carrier * (0.3 + np.abs(envelope))


def _add_kernels(length: int, starts: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Sum of ``kernels[e]`` placed at ``starts[e]`` (clipped to ``[0, length)``)."""
    idx = starts[:, None] + np.arange(kernels.shape[1])[None, :]
    keep = (idx >= 0) & (idx < length)
    return np.bincount(idx[keep], weights=kernels[keep], minlength=length)[:length]


def generate_em(length: int, fs: float, rng: np.random.Generator, rate_hz: float = 0.6) -> np.ndarray:
    """Electrode motion: a synthetic model (the NST ``em`` record is not available).

    Electrode motion changes the electrode's half-cell potential abruptly; an AC-coupled front end
    turns that into a jump that decays back to baseline, often with a short ringing transient
    inside the ECG band (which is why em is the hardest NST noise to filter; Moody et al. 1984).
    The model is a sum of

    * K ~ max(1, Poisson(rate_hz * duration)) events at uniform times t_k, each
      ``a_k exp(-(t - t_k) / tau_k)`` for t >= t_k (a_k ~ N(0, 1), tau_k ~ U(0.15, 1.0) s), plus
      a damped oscillation ``b_k exp(-(t - t_k) / s_k) sin(2 pi f_k (t - t_k))``
      (b_k ~ N(0, 0.5^2), s_k ~ U(0.03, 0.15) s, f_k ~ U(2, 12) Hz);
    * J ~ Poisson(rate_hz / 3 * duration) low-frequency drift bursts, Gaussian-enveloped
      sinusoids ``c_j exp(-((t - u_j) / w_j)^2 / 2) sin(2 pi g_j t + phi_j)``
      (c_j ~ N(0, 0.5^2), w_j ~ U(0.3, 1.5) s, g_j ~ U(0.3, 2) Hz).

    Each term is evaluated on its own support (5 time constants), so the cost is linear in the
    number of events, not in events x length.
    """
    duration = length / fs
    k = max(1, int(rng.poisson(rate_hz * duration)))
    t_k = rng.integers(0, max(length, 1), size=k)
    a = rng.standard_normal(k)
    tau = rng.uniform(0.15, 1.0, size=k)
    b = 0.5 * rng.standard_normal(k)
    s = rng.uniform(0.03, 0.15, size=k)
    f = rng.uniform(2.0, 12.0, size=k)

    support = np.arange(int(np.ceil(5.0 * 1.0 * fs)) + 1) / fs  # 5 x the longest tau
    steps = a[:, None] * np.exp(-support[None, :] / tau[:, None])
    rings = b[:, None] * np.exp(-support[None, :] / s[:, None]) * np.sin(2 * np.pi * f[:, None] * support[None, :])
    out = _add_kernels(length, t_k, steps + rings)

    j = int(rng.poisson(rate_hz / 3.0 * duration))
    if j:
        u = rng.integers(0, max(length, 1), size=j)
        c = 0.5 * rng.standard_normal(j)
        w = rng.uniform(0.3, 1.5, size=j)
        g = rng.uniform(0.3, 2.0, size=j)
        phi = rng.uniform(0.0, 2 * np.pi, size=j)
        half = int(np.ceil(3.0 * 1.5 * fs))  # 3 x the widest envelope
        rel = np.arange(-half, half + 1) / fs
        bursts = c[:, None] * np.exp(-0.5 * (rel[None, :] / w[:, None]) ** 2) * np.sin(
            2 * np.pi * g[:, None] * (rel[None, :] + u[:, None] / fs) + phi[:, None]
        )
        out += _add_kernels(length, u - half, bursts)
    return out


GENERATORS = {"bw": generate_bw, "ma": generate_ma, "em": generate_em}
GENERATOR_DOCS = {
    "bw": "1/f Gaussian noise on 0.05-1 Hz",
    "ma": "5-150 Hz white noise x slow 0.1-1 Hz envelope",
    "em": "decaying baseline jumps with 2-12 Hz ringing + Gaussian-enveloped 0.3-2 Hz drift bursts",
}


# --------------------------------------------------------------------------------------------
# The bank


def scale_to_rms(x: np.ndarray, rms: float) -> np.ndarray:
    """``x`` minus its mean, scaled to RMS ``rms`` (all zeros if ``x`` is constant)."""
    centred = np.asarray(x, dtype=np.float64) - float(np.mean(x))
    current = float(np.sqrt(np.mean(centred**2))) if centred.size else 0.0
    if current <= 1e-12:
        return np.zeros(centred.shape, dtype=np.float32)
    return (centred * (rms / current)).astype(np.float32)


class NoiseBank:
    """Noise windows of each kind in ``NOISE_KINDS`` at the model rate, scaled to a target RMS.

    ``noise_dir``: ``""`` searches the default places (:func:`find_noise_dir`), a path names the
    folder holding ``bw.hea/.dat`` and ``ma.hea/.dat``, ``None`` uses the generators only.
    """

    def __init__(self, sample_rate: float = 500, noise_dir: str | Path | None = "") -> None:
        if sample_rate <= 0:
            raise ValueError(f"NoiseBank: sample_rate must be positive, got {sample_rate}")
        self.sample_rate = float(sample_rate)
        self.noise_dir = find_noise_dir(noise_dir)
        self._recorded: dict[str, np.ndarray] = {}
        self._digests: dict[str, str] = {}
        missing = []
        for kind in RECORDED_KINDS:
            if self.noise_dir is not None and (self.noise_dir / f"{kind}.hea").is_file():
                self._recorded[kind] = load_recorded(str(self.noise_dir), kind, self.sample_rate)
                dat = self.noise_dir / f"{kind}.dat"
                self._digests[kind] = _file_digest(dat) if dat.is_file() else ""
            else:
                missing.append(kind)
        if missing:
            where = str(self.noise_dir) if self.noise_dir is not None else "nowhere (generators requested)"
            key = f"{where}:{','.join(missing)}"
            if noise_dir is not None and key not in _WARNED:
                _WARNED.add(key)
                log.warning(
                    "recorded noise %s not found (looked in %s); using generated noise instead",
                    "/".join(missing), where if self.noise_dir is not None else "the default places",
                )

    def source(self, kind: str) -> str:
        """``"recorded"`` or ``"generated"``."""
        self._check_kind(kind)
        return "recorded" if kind in self._recorded else "generated"

    def sample(self, kind: str, length: int, rms: float = 0.1, rng: np.random.Generator | None = None) -> np.ndarray:
        """A float32 noise window of ``length`` samples, zero mean, RMS exactly ``rms`` (mV).

        Recorded: one channel and a start drawn uniformly (the record wraps around if ``length``
        exceeds it). Generated: a fresh realisation.
        """
        self._check_kind(kind)
        if length < 1:
            raise ValueError(f"NoiseBank.sample: length must be >= 1, got {length}")
        if rms < 0:
            raise ValueError(f"NoiseBank.sample: rms must be >= 0, got {rms}")
        if rng is None:
            raise ValueError("NoiseBank.sample: pass an explicit np.random.Generator (reproducibility)")
        if kind in self._recorded:
            record = self._recorded[kind]
            channel = int(rng.integers(record.shape[0]))
            start = int(rng.integers(record.shape[1]))
            window = np.take(record[channel], np.arange(start, start + length), mode="wrap")
        else:
            window = GENERATORS[kind](length, self.sample_rate, rng)
        return scale_to_rms(window, rms)

    def describe(self) -> dict[str, Any]:
        """Which source each kind came from (goes into run and model provenance)."""
        kinds: dict[str, Any] = {}
        for kind in NOISE_KINDS:
            if kind in self._recorded:
                kinds[kind] = {
                    "source": "recorded",
                    "database": "MIT-BIH Noise Stress Test Database (nstdb)",
                    "record": kind,
                    "native_rate": NST_RATE,
                    "channels": int(self._recorded[kind].shape[0]),
                    "seconds": round(self._recorded[kind].shape[1] / self.sample_rate, 3),
                    "dat_sha256_16": self._digests.get(kind, ""),
                }
            else:
                kinds[kind] = {"source": "generated", "model": GENERATOR_DOCS[kind], "generator_version": GENERATOR_VERSION}
        return {
            "sample_rate": self.sample_rate,
            "noise_dir": str(self.noise_dir) if self.noise_dir is not None else None,
            "kinds": kinds,
        }

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind '{kind}' (expected one of {NOISE_KINDS})")
