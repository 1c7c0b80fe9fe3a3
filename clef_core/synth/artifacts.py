"""Recording artefacts that differ by site: noise, baseline wander, mains hum, gain error.

All act on the measured leads (I, II, V1..V6) before the limb leads are derived, as
electrode and amplifier artefacts do in a real cart, so Einthoven's law still holds.
"""

from __future__ import annotations

import numpy as np

from clef_core.synth.beats import FS, N_SAMPLES
from clef_core.synth.risk_link import nuisance_hz

_T = np.arange(N_SAMPLES, dtype=np.float32) / FS
_WANDER_STEP = 10  # wander is drawn on a 50 Hz grid and linearly upsampled (it has no power above ~1 Hz)
_T_LO = np.arange(N_SAMPLES // _WANDER_STEP + 1, dtype=np.float32) * _WANDER_STEP / FS
_FRAC = (np.arange(_WANDER_STEP) / _WANDER_STEP).astype(np.float32)
_MAINS = {hz: (np.sin(2 * np.pi * hz * _T), np.cos(2 * np.pi * hz * _T)) for hz in (50, 60)}


def baseline_wander(params: np.ndarray, amp_mv: np.ndarray, resp_hz: np.ndarray) -> np.ndarray:
    """(B, L, T) wander: three 0.05-0.5 Hz sinusoids per lead plus a shared respiratory swing.

    ``params`` (B, L, 3, 3) uniforms: frequency, phase, amplitude of each component.
    """
    freq = 0.05 + 0.45 * params[..., 0]
    phase = 2 * np.pi * params[..., 1]
    amp = amp_mv[:, None, None] * (0.2 + 0.8 * params[..., 2]) / 2
    lo = (amp[..., None] * np.sin(2 * np.pi * freq[..., None] * _T_LO + phase[..., None])).sum(axis=2)
    lo += (0.3 * amp_mv)[:, None, None] * np.sin(2 * np.pi * resp_hz[:, None, None] * _T_LO)
    lo = lo.astype(np.float32)
    start, step = lo[..., :-1, None], np.diff(lo, axis=-1)[..., None]
    return (start + step * _FRAC).reshape(*lo.shape[:-1], N_SAMPLES)  # linear interpolation, no gather


def powerline(mains_hz: np.ndarray, amp_mv: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(B, L, T) mains interference; ``params`` (B, L, 2) uniforms: per-lead amplitude and phase."""
    amp = (amp_mv[:, None] * (0.5 + 0.5 * params[..., 0])).astype(np.float32)
    phase = 2 * np.pi * params[..., 1]
    out = np.empty((len(mains_hz), params.shape[1], N_SAMPLES), dtype=np.float32)
    for hz, (s, c) in _MAINS.items():
        sel = mains_hz == hz
        if sel.any():
            a_s = (amp[sel] * np.cos(phase[sel])).astype(np.float32)
            a_c = (amp[sel] * np.sin(phase[sel])).astype(np.float32)
            out[sel] = a_s[..., None] * s + a_c[..., None] * c
    unknown = set(np.unique(mains_hz)) - set(_MAINS)
    if unknown:
        raise ValueError(f"mains frequency must be 50 or 60 Hz, got {sorted(unknown)}")
    return out


def site_signature(site: np.ndarray, amp_mv: np.ndarray, phase_u: np.ndarray) -> np.ndarray:
    """(B, 1, T) a site's own sinusoid (``synth.site_nuisance``), the same on every measured lead;
    ``phase_u`` (B,) uniforms give each record its phase."""
    arg = 2 * np.pi * (nuisance_hz(site)[:, None] * _T[None, :] + phase_u[:, None])
    return (amp_mv[:, None] * np.sin(arg)).astype(np.float32)[:, None, :]
