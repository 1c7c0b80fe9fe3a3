"""The public negative bank: synthetic ECG windows with synthetic clinical metadata.

Under patient-level DP every patient's loss is computed against negatives that do not depend on
the private data (:mod:`clef_core.privacy.loss`). The bank is made by the built-in synthetic
cohort generator (:mod:`clef_core.synth`: a clinical state drawn from published risk-factor
distributions, a dipole beat model) from a public seed, preprocessed like a site's store
(resampled to the model rate, band-passed) and turned into two views per entry with the same
view pipeline as the sites' patients. Its metadata is the run's clinical risk (``[risk]``, SCORE2
by default) computed from the generator's true inputs, with that model's completeness (1 for SCORE2). Every site builds the same bank from the same seed; it holds no patient's data.

Its embeddings are recomputed with the current weights (which are themselves DP releases plus
public data: post-processing) every ``bank_refresh`` steps and detached: a patient's gradient
flows through their own two views only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from clef_core.data.augment import ViewConfig
from clef_core.data.noise import NoiseBank
from clef_core.data.preprocess import PreprocessConfig, bandpass, resample
from clef_core.data.views import make_views
from clef_core.risk.frame import risk_frame
from clef_core.risk.settings import RiskSettings

SYNTH_RATE = 500  # Hz, the generator's rate
_SEED_OFFSET = 0xBA4C  # the bank's cohort seed never equals the default site cohort's


@dataclasses.dataclass(frozen=True)
class NegativeBank:
    """``view1``/``view2`` (B, 1, T) float32 z-scored views; ``risk`` (B,) (NaN = unknown);
    ``completeness`` (B,) in [0, 1]."""

    view1: torch.Tensor
    view2: torch.Tensor
    risk: torch.Tensor
    completeness: torch.Tensor

    def __len__(self) -> int:
        return int(self.view1.shape[0])

    @torch.no_grad()
    def embed(self, encode: Callable[[torch.Tensor], torch.Tensor], chunk: int = 64, view: int = 1) -> torch.Tensor:
        """(B, d) detached embeddings of view 1 (or 2) with ``encode`` (the current weights)."""
        x = self.view1 if view == 1 else self.view2
        return torch.cat([encode(x[i:i + chunk]) for i in range(0, len(self), chunk)]).detach()


def synthetic_bank(
    size: int,
    seed: int,
    preprocess: PreprocessConfig,
    views: ViewConfig,
    noise: NoiseBank,
    risk: RiskSettings | None = None,
) -> NegativeBank:
    """``size`` public synthetic negatives at ``preprocess``'s rate and window length, their
    clinical risk under ``risk`` (default SCORE2, low region)."""
    from clef_core.synth import draw_clinical, make_sites, render

    if size < 1:
        raise ValueError(f"synthetic_bank: size must be >= 1, got {size}")
    cohort_seed = _SEED_OFFSET + int(seed)
    cohort = draw_clinical(size, make_sites(1, cohort_seed), cohort_seed, records_per_patient=(1, 1))
    signals = render(cohort)  # (size, 12, 5000) mV at 500 Hz
    fs = int(preprocess.sample_rate)
    signals = resample(signals.astype(np.float64), SYNTH_RATE, fs) if fs != SYNTH_RATE else signals.astype(np.float64)
    n = preprocess.window_samples
    if signals.shape[-1] < n:
        raise ValueError(f"synthetic_bank: the generator's 10 s records are shorter than the {n}-sample window")
    signals = bandpass(signals[..., :n], preprocess).astype(np.float32)
    rng = np.random.default_rng([_SEED_OFFSET, int(seed)])
    mask = np.ones(signals.shape[1], dtype=bool)
    pairs = [make_views(signals[i], mask, rng, views, noise)[:2] for i in range(size)]
    subjects = cohort.subjects.set_index("subject_id")
    clinical = risk_frame(subjects, risk or RiskSettings()).loc[cohort.records["subject_id"]]
    return NegativeBank(
        view1=torch.from_numpy(np.stack([a for a, _ in pairs])),
        view2=torch.from_numpy(np.stack([b for _, b in pairs])),
        risk=torch.from_numpy(clinical["risk"].to_numpy(np.float32)),
        completeness=torch.from_numpy(clinical["completeness"].to_numpy(np.float32)),
    )
