"""Per-view augmentation (../shared/reference/clef-method.md, "Views", plus the knobs of issue 18).

For one single-lead, band-passed segment ``x`` in mV (a crop of the window, or the whole window):

1. random resized crop, with probability ``rrc_p``: a sub-segment of ``U(rrc_min, 1)`` of ``x`` at a
   uniform position, linearly resampled back to ``len(x)`` (a time stretch of up to ``1 / rrc_min``;
   Chen et al. 2020's crop-and-resize in one dimension);
2. one of ``AUGMENTATIONS`` = {identity, electrode motion, muscle artifact, baseline wander,
   mixture} drawn uniformly; the noise (a random window from :class:`NoiseBank`) is added to ``x``.
   Its RMS is ``noise_rms`` mV (``noise_scale = "absolute"``, the paper) or, with
   ``noise_scale = "snr"``, ``rms(x) * 10 ** (-noise_snr_db / 20)``: a fixed signal-to-noise ratio
   against the segment's own RMS (mean removed), so a low-amplitude lead is not drowned (lead I of
   the synthetic cohort has a median RMS of 0.067 mV: 0.1 mV of noise is SNR -3.5 dB there). The
   mixture is ``em + ma + bw``, each drawn at unit RMS, the sum rescaled to that RMS (equal weights:
   our choice; the method note does not give the reference simulator's mixing weights);
3. with probability ``flip_p`` the sign is inverted (a constant gain or offset would be undone by
   the z-score of step 5, so they are no knob);
4. with probability ``mask_p`` one contiguous block of ``U(mask_min, mask_max)`` of the segment is
   set to zero (time-out, in mV, i.e. before the z-score);
5. the per-view z-score ``(x - mean) / (std + eps)`` (:func:`clef_core.data.preprocess.zscore`).

Steps 1 and 3 draw from the generator only when their probability is above 0, so with
``rrc_p = flip_p = 0`` and absolute noise the draws are the reference pipeline's, draw for draw.
Everything is a pure function of its inputs and an explicit ``np.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clef_core.config import require
from clef_core.data.noise import NOISE_KINDS, NoiseBank, scale_to_rms
from clef_core.data.preprocess import zscore

AUGMENTATIONS = ("identity", "em", "ma", "bw", "mixture")
PAIRINGS = ("disjoint_crops", "same_window", "leads", "recordings")
NOISE_SCALES = ("snr", "absolute")


@dataclass(frozen=True)
class ViewConfig:
    """The ``[views]`` section: an experiment's ``exp.views`` (configs/default.toml documents each key;
    docs/training.md gives the measurements behind the defaults)."""

    pairing: str = "disjoint_crops"
    crop_s: float = 4.0  # seconds per view; 0: the whole window (same_window / leads only)
    same_lead_p: float = 0.8
    noise_scale: str = "snr"
    noise_snr_db: float = 10.0  # dB against the view's own RMS (noise_scale = "snr")
    noise_rms: float = 0.1  # mV (noise_scale = "absolute")
    mask_p: float = 0.2
    mask_min: float = 0.1  # fraction of the view
    mask_max: float = 0.3
    rrc_p: float = 0.0
    rrc_min: float = 0.8  # fraction of the view kept by a random resized crop
    flip_p: float = 0.0
    noise_dir: str = ""  # see clef_core.data.noise.find_noise_dir

    def __post_init__(self) -> None:
        require(self.pairing in PAIRINGS, "views.pairing", self.pairing, " | ".join(PAIRINGS))
        require(self.noise_scale in NOISE_SCALES, "views.noise_scale", self.noise_scale, " | ".join(NOISE_SCALES))
        for name in ("same_lead_p", "mask_p", "rrc_p", "flip_p"):
            require(0.0 <= getattr(self, name) <= 1.0, f"views.{name}", getattr(self, name), "in [0, 1]")
        require(self.crop_s >= 0, "views.crop_s", self.crop_s, ">= 0 (0: the whole window)")
        require(self.crop_s > 0 or self.pairing != "disjoint_crops", "views.crop_s", self.crop_s,
                "> 0 with pairing disjoint_crops (0, the whole window, cannot give disjoint crops)")
        require(self.noise_rms >= 0, "views.noise_rms", self.noise_rms, ">= 0")
        require(0.0 <= self.mask_min <= self.mask_max <= 1.0, "views.mask_min/mask_max", (self.mask_min, self.mask_max),
                "0 <= min <= max <= 1")
        require(0.0 < self.rrc_min <= 1.0, "views.rrc_min", self.rrc_min, "in (0, 1]")


@dataclass(frozen=True)
class AugmentSpec:
    """What one view gets: a noise kind and an optional zero block ``[start, stop)``."""

    kind: str
    mask: tuple[int, int] | None


def draw_augmentation(length: int, rng: np.random.Generator, cfg: ViewConfig) -> AugmentSpec:
    """Draw the augmentation of one view of ``length`` samples."""
    kind = AUGMENTATIONS[int(rng.integers(len(AUGMENTATIONS)))]
    mask = None
    if rng.random() < cfg.mask_p:
        width = int(round(rng.uniform(cfg.mask_min, cfg.mask_max) * length))
        width = min(max(width, 0), length)
        start = int(rng.integers(0, length - width + 1))
        mask = (start, start + width)
    return AugmentSpec(kind, mask)


def noise_for(kind: str, length: int, rng: np.random.Generator, rms: float, bank: NoiseBank) -> np.ndarray | None:
    """The additive noise of augmentation ``kind`` (``None`` for identity), RMS ``rms``."""
    if kind == "identity":
        return None
    if kind == "mixture":
        parts = [bank.sample(k, length, 1.0, rng) for k in NOISE_KINDS]
        return scale_to_rms(np.sum(parts, axis=0), rms)
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation '{kind}' (expected one of {AUGMENTATIONS})")
    return bank.sample(kind, length, rms, rng)


def noise_level(x: np.ndarray, cfg: ViewConfig) -> float:
    """The noise RMS (mV) for segment ``x``: absolute, or ``rms(x - mean x) * 10^(-snr/20)``."""
    if cfg.noise_scale == "absolute":
        return cfg.noise_rms
    centred = np.asarray(x, np.float64) - float(np.mean(x))
    return float(np.sqrt(np.mean(centred**2))) * 10.0 ** (-cfg.noise_snr_db / 20.0)


def resized_crop(x: np.ndarray, rng: np.random.Generator, min_fraction: float) -> np.ndarray:
    """A sub-segment of ``U(min_fraction, 1) * len(x)`` samples at a uniform start, linearly
    interpolated back to ``len(x)`` samples."""
    n = x.shape[-1]
    width = max(2, int(round(rng.uniform(min_fraction, 1.0) * n)))
    start = int(rng.integers(0, n - width + 1))
    grid = start + np.linspace(0.0, width - 1, n)
    return np.interp(grid, np.arange(n), x).astype(np.float32)


def apply_augmentation(x: np.ndarray, spec: AugmentSpec, rng: np.random.Generator, cfg: ViewConfig, bank: NoiseBank) -> np.ndarray:
    """Noise, sign flip (when ``flip_p`` > 0) then mask, in mV (no z-score). ``x``: (T,) float."""
    out = np.array(x, dtype=np.float32, copy=True)
    noise = noise_for(spec.kind, out.shape[-1], rng, noise_level(out, cfg), bank)
    if noise is not None:
        out += noise
    if cfg.flip_p > 0 and rng.random() < cfg.flip_p:
        out = -out
    if spec.mask is not None:
        out[spec.mask[0] : spec.mask[1]] = 0.0
    return out


def augment(x: np.ndarray, rng: np.random.Generator, cfg: ViewConfig, bank: NoiseBank) -> np.ndarray:
    """One augmented, z-scored view of the single-lead segment ``x`` (T,) in mV -> (T,) float32."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"augment: expected a single-lead window (T,), got shape {x.shape}")
    if cfg.rrc_p > 0 and rng.random() < cfg.rrc_p:
        x = resized_crop(x, rng, cfg.rrc_min)
    spec = draw_augmentation(x.shape[0], rng, cfg)
    return zscore(apply_augmentation(x, spec, rng, cfg, bank))
