"""The two positive views of one pretraining item (../shared/reference/clef-method.md, "Views";
issue 18 for the pairings).

``views.pairing`` says where the two views come from:

* ``disjoint_crops`` (default; CLOCS, Kiyasseh et al. 2021, "contrastive multi-segment coding"):
  one crop of ``crop_s`` seconds from each half of the window, so the views share no sample.
  With both views on the same stretch of signal the encoder can solve instance discrimination by
  matching exact samples (beat timing, the record's own noise) instead of learning the patient:
  measured on the study cohort, its probe fell with more steps (issue 18, docs/training.md).
* ``same_window`` (the reference code): both views are the same window (or the same crop when
  ``crop_s`` > 0); only the augmentations differ.
* ``leads``: two different leads at the same moment (CLOCS's "multi-lead" coding); a record with
  one available lead gives the same lead twice.
* ``recordings``: a crop of two different recordings of the patient (the dataset passes the
  second one); a patient with one recording falls back to ``disjoint_crops``.

Leads (``same_window``, ``disjoint_crops``): view 1's lead is uniform over the leads the record
actually has (``lead_mask``); with probability ``same_lead_p`` view 2 uses the same lead,
otherwise its lead is drawn independently, again uniformly over the available leads, so the
overall same-lead probability is ``p + (1 - p) / n_available`` (0.8167 for 12 leads).
Each view is then augmented independently (:func:`clef_core.data.augment.augment`) and z-scored.
Crop lengths are in seconds at the noise bank's rate (the bank is built at the store's rate).
"""

from __future__ import annotations

import numpy as np

from clef_core.data.augment import ViewConfig, augment
from clef_core.data.noise import NoiseBank


def draw_leads(lead_mask: np.ndarray, rng: np.random.Generator, same_lead_p: float) -> tuple[int, int]:
    """Indices of the leads of view 1 and view 2, drawn from the ``True`` entries of ``lead_mask``."""
    available = _available(lead_mask)
    lead1 = int(available[rng.integers(available.size)])
    if rng.random() < same_lead_p:
        return lead1, lead1
    return lead1, int(available[rng.integers(available.size)])


def draw_distinct_leads(lead_mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Two different available leads, uniformly (the same lead twice when only one is available)."""
    available = _available(lead_mask)
    if available.size == 1:
        return int(available[0]), int(available[0])
    first, second = rng.choice(available.size, size=2, replace=False)
    return int(available[first]), int(available[second])


def _available(lead_mask: np.ndarray) -> np.ndarray:
    available = np.flatnonzero(np.asarray(lead_mask, dtype=bool))
    if available.size == 0:
        raise ValueError("draw_leads: the window has no available lead (lead_mask is all False)")
    return available


def crop_samples(cfg: ViewConfig, length: int, fs: float) -> int:
    """Samples per view: ``round(crop_s * fs)``, or the whole ``length`` when ``crop_s`` is 0."""
    if cfg.crop_s == 0:
        return length
    n = int(round(cfg.crop_s * fs))
    if not 1 <= n <= length:
        raise ValueError(f"views.crop_s = {cfg.crop_s} s is {n} samples at {fs:g} Hz; the window has {length}")
    return n


def disjoint_starts(length: int, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Start of a ``crop``-sample crop in the first half of ``length`` and of one in the second half."""
    half = length // 2
    if crop > half:
        raise ValueError(f"views.crop_s: a crop of {crop} samples does not fit twice, disjoint, in a "
                         f"{length}-sample window (at most {half}); lower crop_s or use another views.pairing")
    return int(rng.integers(0, half - crop + 1)), half + int(rng.integers(0, length - half - crop + 1))


def make_views(
    window: np.ndarray,
    lead_mask: np.ndarray,
    rng: np.random.Generator,
    cfg: ViewConfig,
    noise_bank: NoiseBank,
    other: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``window`` (L, T) in mV, ``lead_mask`` (L,) bool -> (view1 (1, C), view2 (1, C), lead1, lead2).

    ``other``: (window, lead_mask) of another recording of the same patient, used by
    ``pairing = "recordings"`` (ignored otherwise). The views are float32 and z-scored; C is the
    crop length (T when ``crop_s`` = 0); lead1/lead2 index the rows of their windows.
    """
    window, lead_mask = _checked(window, lead_mask)
    n = window.shape[1]
    crop = crop_samples(cfg, n, noise_bank.sample_rate)
    pairing = cfg.pairing
    if pairing == "recordings" and other is None:
        pairing = "disjoint_crops"
    if pairing == "recordings" and other is not None:
        window2, mask2 = _checked(*other)
        lead1 = int(draw_leads(lead_mask, rng, 1.0)[0])
        lead2 = lead1 if mask2[lead1] and rng.random() < cfg.same_lead_p else draw_leads(mask2, rng, 1.0)[0]
        crop = min(crop, window2.shape[1])
        s1, s2 = int(rng.integers(0, n - crop + 1)), int(rng.integers(0, window2.shape[1] - crop + 1))
        seg1, seg2 = window[lead1, s1 : s1 + crop], window2[lead2, s2 : s2 + crop]
    else:
        if pairing == "leads":
            lead1, lead2 = draw_distinct_leads(lead_mask, rng)
        else:
            lead1, lead2 = draw_leads(lead_mask, rng, cfg.same_lead_p)
        if pairing == "disjoint_crops":
            s1, s2 = disjoint_starts(n, crop, rng)
        else:
            s1 = s2 = int(rng.integers(0, n - crop + 1)) if crop < n else 0
        seg1, seg2 = window[lead1, s1 : s1 + crop], window[lead2, s2 : s2 + crop]
    view1 = augment(seg1, rng, cfg, noise_bank)
    view2 = augment(seg2, rng, cfg, noise_bank)
    return view1[None, :], view2[None, :], int(lead1), int(lead2)


def _checked(window: np.ndarray, lead_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    window = np.asarray(window)
    lead_mask = np.asarray(lead_mask, dtype=bool)
    if window.ndim != 2 or lead_mask.shape != (window.shape[0],):
        raise ValueError(f"make_views: expected window (L, T) and lead_mask (L,), got {window.shape} and {lead_mask.shape}")
    return window, lead_mask
