"""Write ``preprocess.json``: the training preprocessing turned into fixed numbers for the device.

scipy designs the band-pass once here (Butterworth, ``scipy.signal.butter(..., output="sos")``,
its steady-state initial conditions ``sosfilt_zi`` and ``sosfiltfilt``'s default odd-padding
length ``3 * (2 * n_sections + 1 - min(#(b2 == 0), #(a2 == 0)))``), so the device runs
the exact same zero-phase filter in numpy (edge/runtime/filters.py). Format: edge/runtime/spec.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import signal as ss

from edge.runtime.spec import FORMAT, FORMAT_VERSION, spec_from_dict

DEFAULTS = {"sample_rate": 500.0, "window_s": 10.0, "bandpass_low": 0.67, "bandpass_high": 40.0,
            "filter_order": 5, "max_nan_gap_s": 0.5, "flat_ptp_mv": 0.02, "max_abs_mv": 30.0,
            "noise_kurtosis_max": 4.0, "noise_hf_low_hz": 15.0, "noise_hf_fraction_min": 0.4}


def sosfiltfilt_padlen(sos: np.ndarray) -> int:
    """The ``padlen`` that ``scipy.signal.sosfiltfilt`` uses by default for ``sos``."""
    n = sos.shape[0]
    return 3 * (2 * n + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum())))


def band_filter(rate: float, low: float, high: float, order: int) -> dict[str, Any]:
    if not 0 < low < high < rate / 2:
        raise ValueError(f"band-pass {low}-{high} Hz is not valid at {rate} Hz")
    sos = ss.butter(order, [low, high], btype="bandpass", fs=rate, output="sos")
    return {"sos": sos.tolist(), "zi": ss.sosfilt_zi(sos).tolist(), "padlen": sosfiltfilt_padlen(sos)}


def build_preprocess_json(
    preprocess: Mapping[str, Any],
    *,
    leads: Iterable[str] = ("I", "II"),
    heads: Mapping[str, Mapping[str, Any]] | None = None,
    context_s: float = 10.0,
    zscore_eps: float = 1e-6,
) -> dict[str, Any]:
    """The ``preprocess.json`` dict for a checkpoint's ``preprocess`` section.

    ``preprocess`` is a checkpoint's preprocess section (clef_core.data.preprocess.
    PreprocessConfig.to_dict(): resample with resample_poly, then band-pass at the model rate);
    missing keys take the defaults above.
    """
    p = {**DEFAULTS, **{k: v for k, v in preprocess.items() if k in DEFAULTS}}
    rate = float(p["sample_rate"])
    low, high, order = float(p["bandpass_low"]), float(p["bandpass_high"]), int(p["filter_order"])
    d = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sample_rate": rate,
        "window_s": float(p["window_s"]),
        "units": "mV",
        "steps": ["resample", "bandpass", "zscore"],
        "bandpass": {"low_hz": low, "high_hz": high, "order": order, "design": "butter",
                     "filters": {f"{rate:g}": band_filter(rate, low, high, order)}},
        "resample": {"method": "polyphase-kaiser", "kaiser_beta": 5.0, "half_len_factor": 10},
        "stream": {"context_s": float(context_s)},
        "zscore": {"eps": float(zscore_eps)},
        "max_nan_gap_s": float(p["max_nan_gap_s"]),
        "flat_ptp_mv": float(p["flat_ptp_mv"]),
        "max_abs_mv": float(p["max_abs_mv"]),
        "noise": {"kurtosis_max": float(p["noise_kurtosis_max"]), "hf_band_hz": [float(p["noise_hf_low_hz"]), high],
                  "hf_fraction_min": float(p["noise_hf_fraction_min"])},
        "leads": list(leads),
        "heads": {name: dict(h) for name, h in (heads or {}).items()},
    }
    spec_from_dict(d, "preprocess.json (being written)")  # what we write must read back
    return d
