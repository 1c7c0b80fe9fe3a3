"""The two positive views of one CLEF pretraining item (../shared/reference/clef-method.md, "Views").

Lead of view 1: uniform over the leads the record actually has (``lead_mask``; the method note
says "uniform over the 12", which is the same thing for a complete record). With probability
``same_lead_p`` view 2 uses the same lead; otherwise its lead is drawn independently, again
uniformly over the available leads, so it may coincide with view 1's: the overall same-lead
probability is ``p + (1 - p) / n_available`` (0.8167 for 12 leads, 1 for a single-lead record).
Both views come from the same window and are augmented independently, then z-scored.
"""

from __future__ import annotations

import numpy as np

from clef_core.data.augment import ViewConfig, augment
from clef_core.data.noise import NoiseBank


def draw_leads(lead_mask: np.ndarray, rng: np.random.Generator, same_lead_p: float) -> tuple[int, int]:
    """Indices of the leads of view 1 and view 2, drawn from the ``True`` entries of ``lead_mask``."""
    available = np.flatnonzero(np.asarray(lead_mask, dtype=bool))
    if available.size == 0:
        raise ValueError("draw_leads: the window has no available lead (lead_mask is all False)")
    lead1 = int(available[rng.integers(available.size)])
    if rng.random() < same_lead_p:
        return lead1, lead1
    return lead1, int(available[rng.integers(available.size)])


def make_views(
    window: np.ndarray,
    lead_mask: np.ndarray,
    rng: np.random.Generator,
    cfg: ViewConfig,
    noise_bank: NoiseBank,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``window`` (12, T) in mV, ``lead_mask`` (12,) bool -> (view1 (1, T), view2 (1, T), lead1, lead2).

    The views are float32 and z-scored; lead1/lead2 index the rows of ``window``.
    """
    window = np.asarray(window)
    lead_mask = np.asarray(lead_mask, dtype=bool)
    if window.ndim != 2 or lead_mask.shape != (window.shape[0],):
        raise ValueError(f"make_views: expected window (L, T) and lead_mask (L,), got {window.shape} and {lead_mask.shape}")
    lead1, lead2 = draw_leads(lead_mask, rng, cfg.same_lead_p)
    view1 = augment(window[lead1], rng, cfg, noise_bank)
    view2 = augment(window[lead2], rng, cfg, noise_bank)
    return view1[None, :], view2[None, :], lead1, lead2
