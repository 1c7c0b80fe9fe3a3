"""Per-view augmentation of the CLEF method (../shared/reference/clef-method.md, "Views").

For one single-lead, band-passed window ``x`` in mV:

1. one of ``AUGMENTATIONS`` = {identity, electrode motion, muscle artifact, baseline wander,
   mixture} drawn uniformly; the noise (a random window from :class:`NoiseBank`, scaled to RMS
   ``noise_rms`` mV) is added to ``x``. The mixture is ``em + ma + bw``, each drawn at unit
   RMS, the sum rescaled to ``noise_rms`` (equal weights: our choice; the method note does not
   give the reference simulator's mixing weights);
2. with probability ``mask_p`` one contiguous block of ``U(mask_min, mask_max)`` of the window is
   set to zero (in mV, i.e. before the z-score);
3. the per-view z-score ``(x - mean) / (std + eps)`` (:func:`clef_core.data.preprocess.zscore`).

Everything is a pure function of its inputs and an explicit ``np.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clef_core.data.noise import NOISE_KINDS, NoiseBank, scale_to_rms
from clef_core.data.preprocess import zscore

AUGMENTATIONS = ("identity", "em", "ma", "bw", "mixture")


@dataclass(frozen=True)
class ViewConfig:
    """The ``[views]`` section: ``ViewConfig(**cfg["views"])``."""

    same_lead_p: float = 0.8
    noise_rms: float = 0.1  # mV
    mask_p: float = 0.2
    mask_min: float = 0.1  # fraction of the window
    mask_max: float = 0.3
    noise_dir: str = ""  # see clef_core.data.noise.find_noise_dir

    def __post_init__(self) -> None:
        for name in ("same_lead_p", "mask_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"views.{name} must be in [0, 1], got {value}")
        if self.noise_rms < 0:
            raise ValueError(f"views.noise_rms must be >= 0, got {self.noise_rms}")
        if not 0.0 <= self.mask_min <= self.mask_max <= 1.0:
            raise ValueError(f"views.mask_min/mask_max must satisfy 0 <= min <= max <= 1, got {self.mask_min}, {self.mask_max}")


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


def apply_augmentation(x: np.ndarray, spec: AugmentSpec, rng: np.random.Generator, cfg: ViewConfig, bank: NoiseBank) -> np.ndarray:
    """Noise then mask, in mV (no z-score). ``x``: (T,) float."""
    out = np.array(x, dtype=np.float32, copy=True)
    noise = noise_for(spec.kind, out.shape[-1], rng, cfg.noise_rms, bank)
    if noise is not None:
        out += noise
    if spec.mask is not None:
        out[spec.mask[0] : spec.mask[1]] = 0.0
    return out


def augment(x: np.ndarray, rng: np.random.Generator, cfg: ViewConfig, bank: NoiseBank) -> np.ndarray:
    """One augmented, z-scored view of the single-lead window ``x`` (T,) in mV -> (T,) float32."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"augment: expected a single-lead window (T,), got shape {x.shape}")
    spec = draw_augmentation(x.shape[0], rng, cfg)
    return zscore(apply_augmentation(x, spec, rng, cfg, bank))
