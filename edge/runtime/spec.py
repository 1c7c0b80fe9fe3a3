"""``preprocess.json``: what the device must do to a raw single-lead signal before the model.

Written by ``clef export`` beside the model files (one versioned format, checked on read);
everything here is plain numbers so the device needs neither scipy nor torch::

    {
      "format": "clef-edge-preprocess", "format_version": 1,
      "sample_rate": 500,            # model rate, Hz
      "window_s": 10.0,              # one model input = window_s * sample_rate samples
      "units": "mV",
      "steps": ["resample", "bandpass", "zscore"],   # order applied to the raw signal
      "bandpass": {"low_hz": 0.67, "high_hz": 40.0, "order": 5, "design": "butter",
                   "filters": {"500": {"sos": [[b0,b1,b2,1,a1,a2], ...], "zi": [[..,..], ...],
                                       "padlen": 33}}},          # keyed by the rate it runs at
      "resample": {"method": "polyphase-kaiser", "kaiser_beta": 5.0, "half_len_factor": 10},
      "stream": {"context_s": 10.0}, # raw context filtered on each side of a window
      "zscore": {"eps": 1e-6},       # (x - mean) / max(std, eps) per window, as in training
      "max_nan_gap_s": 0.5,          # a longer NaN gap skips the windows it touches ("nan_gap")
      "flat_ptp_mv": 0.02,           # a band-passed window spanning less is skipped ("flat", lead off)
      "leads": ["I", "II"],          # leads the model was calibrated and gated on
      "max_abs_mv": 30.0,            # a sample beyond +-this skips its window ("out_of_range"), as the store does
      "noise": {"kurtosis_max": 4.0, "hf_band_hz": [15.0, 40.0], "hf_fraction_min": 0.4},
                                     # a window below the kurtosis AND above the high-band power fraction
                                     # is random noise, not ECG (edge/runtime/quality.py)
      "heads": {name: {"labels": [...], "weight": [[...]], "bias": [...], "activation": "sigmoid",
                       "lead": "II",           # run on windows of this lead only (null: any lead)
                       "task": "mitdb_af", "metric": "auroc", "value": 0.74,   # validation, informative
                       "near_chance": "near chance: ...",   # only on a head shipped with --force-heads
                       "operating_points": {label: {"probability_threshold": 0.23, "sensitivity": 0.9,
                                                    "specificity": 0.4, "calibrated": true,
                                                    "calibration": {"method": "platt", "a": 1.1, "b": -0.4,
                                                                    "n_records": 18, ...}, ...}}}}
                                     # a calibrated label's probability is sigmoid(a * logit + b)
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .quality import NoiseRule, QualityRule
from .wfdb_lite import lead_key

FORMAT = "clef-edge-preprocess"
FORMAT_VERSION = 1
STEP_NAMES = ("resample", "bandpass", "zscore")
ACTIVATIONS = ("sigmoid", "softmax", "none", "identity")  # identity = none (regression heads)


class SpecError(ValueError):
    """``preprocess.json`` is missing, malformed or of an unsupported version."""


@dataclass(frozen=True)
class BandFilter:
    """One stored band-pass realisation for one sample rate."""

    sos: np.ndarray  # (n_sections, 6)
    zi: np.ndarray  # (n_sections, 2), scipy.signal.sosfilt_zi(sos)
    padlen: int


@dataclass(frozen=True)
class Head:
    """A linear task head run in numpy on the dequantised embedding, on windows of ``lead`` only
    (None: any lead); a label with an operating point gets a decision beside its score."""

    labels: list[str]
    weight: np.ndarray  # (n_labels, emb_dim)
    bias: np.ndarray  # (n_labels,)
    activation: str
    lead: str | None = None
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    task: str | None = None
    metric: str | None = None
    value: float | None = None
    near_chance: str | None = None  # why, when shipped with clef export --force-heads

    def applies_to(self, lead: str | None) -> bool:
        return self.lead is None or (lead is not None and lead_key(self.lead) == lead_key(lead))

    def platt(self, label: str) -> tuple[float, float] | None:
        """``(a, b)`` of the label's Platt map (clef_core/evaluation/calibration.py), if it ships one."""
        cal = self.operating_points.get(label, {}).get("calibration") if self.activation == "sigmoid" else None
        return (float(cal["a"]), float(cal["b"])) if isinstance(cal, dict) else None

    def decisions(self, scores: np.ndarray) -> dict[str, bool]:
        """``{label: probability >= its operating point's threshold}`` for the labels that have one."""
        return {label: bool(p >= self.operating_points[label]["probability_threshold"])
                for label, p in zip(self.labels, scores) if label in self.operating_points}

    def describe(self, name: str) -> str:
        """One line for the console: what the head's output means and does not mean."""
        where = f"lead {self.lead}" if self.lead else "any lead"
        val = (f", validation {self.metric} {self.value:.3f}" if self.metric and isinstance(self.value, (int, float))
               else "")
        text = f"head {name} ({where}{val}): "
        if self.near_chance:
            text += f"NEAR CHANCE ({self.near_chance}; shipped with --force-heads): "
        if self.activation not in ("sigmoid", "softmax"):
            return text + "a regression output"
        if not self.operating_points:
            return text + ("a ranking score, not a detector: no operating point shipped, and 0.5 is not a "
                           "threshold (uncalibrated)")
        parts = []
        for label, op in self.operating_points.items():
            cal = op.get("calibration") if self.platt(label) else None
            how = (f"probability calibrated (Platt) on {cal.get('n_records', '?')} held-out records, Brier "
                   f"{_fmt(cal.get('brier_before'), 3)} -> {_fmt(cal.get('brier_after'), 3)}; " if cal
                   else "uncalibrated score, ")
            parts.append(f"'{label}' decided at {'probability' if cal else 'score'} >= {op['probability_threshold']:.3g} "
                         f"({how}target sensitivity {op['target_sensitivity']:g}; measured sensitivity "
                         f"{_fmt(op.get('sensitivity'))}, specificity {_fmt(op.get('specificity'))} on "
                         f"{op.get('n_pos', '?')}+{op.get('n_neg', '?')} held-out windows)")
        calibrated = all(self.platt(label) for label in self.labels)
        return text + ("a calibrated probability; " if calibrated
                       else "a ranking score, not a calibrated probability; ") + "; ".join(parts)

    def __call__(self, embedding: np.ndarray) -> np.ndarray:
        z = self.weight @ embedding + self.bias
        if self.activation == "sigmoid":
            for j, label in enumerate(self.labels):
                if ab := self.platt(label):
                    z[j] = ab[0] * z[j] + ab[1]
            return 1.0 / (1.0 + np.exp(-z))
        if self.activation == "softmax":
            e = np.exp(z - z.max())
            return e / e.sum()
        return z


def _fmt(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "n/a"


@dataclass(frozen=True)
class PreprocessSpec:
    sample_rate: float
    window_s: float
    steps: tuple[str, ...]
    filters: dict[float, BandFilter]
    bandpass: dict[str, Any]
    context_s: float = 10.0
    zscore_eps: float = 1e-6
    max_nan_gap_s: float = 0.5
    flat_ptp_mv: float = 0.02
    leads: tuple[str, ...] = ("I", "II")
    heads: dict[str, Head] = field(default_factory=dict)
    max_abs_mv: float = 30.0
    noise: NoiseRule = field(default_factory=NoiseRule)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def quality(self) -> QualityRule:
        """The per-window quality rule the store applied in training (edge/runtime/quality.py)."""
        return QualityRule(self.max_abs_mv, self.max_nan_gap_s, self.flat_ptp_mv, self.noise)

    def filter_at(self, rate: float) -> BandFilter:
        for r, f in self.filters.items():
            if abs(r - rate) < 1e-6:
                return f
        raise SpecError(f"preprocess.json has no band-pass for {rate:g} Hz (stored: "
                        f"{', '.join(f'{r:g}' for r in self.filters)}); re-export with that rate")


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise SpecError(f"{where}: missing key '{key}'")
    return d[key]


def spec_from_dict(d: dict[str, Any], where: str = "preprocess.json") -> PreprocessSpec:
    """Validate and convert the JSON dict; errors name the file and the key."""
    if d.get("format") != FORMAT:
        raise SpecError(f"{where}: not a clef edge preprocess file (format {d.get('format')!r}, expected {FORMAT!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise SpecError(f"{where}: format_version {d.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    steps = tuple(_need(d, "steps", where))
    unknown = [s for s in steps if s not in STEP_NAMES]
    if unknown or "zscore" not in steps or steps[-1] != "zscore":
        raise SpecError(f"{where}: steps {list(steps)} must be a subset of {list(STEP_NAMES)} ending in 'zscore'")
    bandpass = dict(_need(d, "bandpass", where))
    filters = {}
    for rate, f in _need(bandpass, "filters", f"{where}: bandpass").items():
        sos = np.asarray(_need(f, "sos", f"{where}: bandpass.filters.{rate}"), dtype=np.float64)
        zi = np.asarray(_need(f, "zi", f"{where}: bandpass.filters.{rate}"), dtype=np.float64)
        if sos.ndim != 2 or sos.shape[1] != 6 or zi.shape != (sos.shape[0], 2):
            raise SpecError(f"{where}: bandpass.filters.{rate}: sos must be (n, 6) and zi (n, 2)")
        filters[float(rate)] = BandFilter(sos, zi, int(_need(f, "padlen", f"{where}: bandpass.filters.{rate}")))
    if "bandpass" in steps and not filters:
        raise SpecError(f"{where}: bandpass step without stored filters")
    heads = {}
    for name, h in (d.get("heads") or {}).items():
        act = h.get("activation", "sigmoid")
        if act not in ACTIVATIONS:
            raise SpecError(f"{where}: head '{name}' activation {act!r} not in {ACTIVATIONS}")
        w = np.asarray(_need(h, "weight", f"{where}: heads.{name}"), dtype=np.float64)
        b = np.asarray(_need(h, "bias", f"{where}: heads.{name}"), dtype=np.float64)
        labels = [str(x) for x in _need(h, "labels", f"{where}: heads.{name}")]
        if w.shape[0] != len(labels) or b.shape != (len(labels),):
            raise SpecError(f"{where}: head '{name}' weight/bias shapes do not match its {len(labels)} labels")
        ops = {str(k): dict(v) for k, v in (h.get("operating_points") or {}).items()
               if isinstance(v, dict) and isinstance(v.get("probability_threshold"), (int, float))}
        for label, op in ops.items():
            cal = op.get("calibration")
            if cal is not None and not (isinstance(cal, dict) and all(isinstance(cal.get(k), (int, float)) for k in "ab")):
                raise SpecError(f"{where}: head '{name}' label '{label}': calibration needs numbers 'a' and 'b'")
        value = h.get("value")
        heads[str(name)] = Head(labels, w, b, act, lead=h.get("lead"), operating_points=ops, task=h.get("task"),
                                metric=h.get("metric"), value=float(value) if isinstance(value, (int, float)) else None,
                                near_chance=str(h["near_chance"]) if h.get("near_chance") else None)
    sample_rate = float(_need(d, "sample_rate", where))
    window_s = float(_need(d, "window_s", where))
    if sample_rate <= 0 or window_s <= 0 or abs(sample_rate * window_s - round(sample_rate * window_s)) > 1e-6:
        raise SpecError(f"{where}: sample_rate * window_s must be a positive whole number of samples")
    noise = dict(d.get("noise") or {})
    band = (float(bandpass.get("low_hz", 0.67)), float(bandpass.get("high_hz", 40.0)))
    try:
        rule = NoiseRule(kurtosis_max=float(noise.get("kurtosis_max", 4.0)),
                         hf_band_hz=tuple(float(v) for v in noise.get("hf_band_hz", (15.0, 40.0))),  # type: ignore[arg-type]  # length checked below
                         hf_fraction_min=float(noise.get("hf_fraction_min", 0.4)), band_hz=band)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: noise: {exc}") from exc
    max_abs_mv = float(d.get("max_abs_mv", 30.0))
    if max_abs_mv <= 0 or len(rule.hf_band_hz) != 2:
        raise SpecError(f"{where}: max_abs_mv must be > 0 and noise.hf_band_hz a [low, high] pair")
    return PreprocessSpec(
        sample_rate=sample_rate,
        window_s=window_s,
        steps=steps,
        filters=filters,
        bandpass={k: v for k, v in bandpass.items() if k != "filters"},
        context_s=float(d.get("stream", {}).get("context_s", 10.0)),
        zscore_eps=float(d.get("zscore", {}).get("eps", 1e-6)),
        max_nan_gap_s=float(d.get("max_nan_gap_s", 0.5)),
        flat_ptp_mv=float(d.get("flat_ptp_mv", 0.02)),
        leads=tuple(d.get("leads", ("I", "II"))),
        heads=heads,
        max_abs_mv=max_abs_mv,
        noise=rule,
        raw=d,
    )


def load_spec(path: str | Path) -> PreprocessSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file (clef export writes preprocess.json beside the model)")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid JSON: {exc}") from exc
    return spec_from_dict(d, str(path))
