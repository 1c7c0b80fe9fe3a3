"""Server-side linear probe of the global encoder on a held-out labelled cohort, served by
:mod:`clef_core.evaluation` (the same probe, folds and AUROC as ``clef evaluate``).

Each held-out record's first window (one lead, z-scored) is embedded by the frozen encoder; for
every binary label with enough positives and negatives a logistic-regression probe is fitted in
patient-grouped K-fold cross-validation (:func:`clef_core.evaluation.protocol.oof_decisions`) and
scored by AUROC on the pooled out-of-fold decisions (:func:`clef_core.evaluation.protocol.score`).
The reported ``probe_auroc`` is the mean over the scored labels; ``probe_pos.<label>`` and
``probe_neg.<label>`` are the counts behind each label's error bar.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from clef_core.evaluation.embed import embed
from clef_core.evaluation.protocol import oof_decisions, score

MIN_PER_CLASS = 4
# ridge strength for probe sets of ~100 patients and 256-d embeddings (C = 0.01)
L2 = 100.0


@dataclasses.dataclass
class ProbeSet:
    """Held-out windows ``x`` (N, T) z-scored, labels ``y`` (N, C) (NaN = unknown), patient ``groups``."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    labels: list[str]

    @classmethod
    def from_site(cls, site: Any, lead: str = "I", labels: Sequence[str] | None = None) -> ProbeSet | None:
        """From a prepared held-out site (``clef_core.prepared_site.PreparedSite``); None without labels."""
        from clef_core.data.datasets import LabelledWindows

        table = site.labels
        if table is None:
            return None
        candidates = [c for c in table.columns if c not in ("study_id", "subject_id", "record_id")]
        binary = [c for c in candidates if set(np.unique(table[c].dropna())) <= {0, 1}]
        chosen = [c for c in (labels or binary) if c in binary]
        if not chosen:
            return None
        windows = LabelledWindows(site.store, table, chosen, lead=lead, first_window_only=True)
        x, y, groups = windows.to_numpy()
        return cls(x, y, groups, chosen)


def probe_scores(features: np.ndarray, probe: ProbeSet, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """``probe_auroc`` (mean) and ``probe_auroc.<label>`` for each label with at least
    :data:`MIN_PER_CLASS` positives and negatives, with ``probe_pos.<label>`` / ``probe_neg.<label>``."""
    out: dict[str, float] = {}
    for j, label in enumerate(probe.labels):
        known = np.isfinite(probe.y[:, j])
        y = probe.y[known, j:j + 1]
        if min(int(y.sum()), int((1 - y).sum())) < MIN_PER_CLASS:
            continue
        decision = oof_decisions(features[known], y, "binary", [label], probe.groups[known], folds=folds, seed=seed,
                                 l2=L2)
        entry = score("binary", [label], y, decision, min_per_class=MIN_PER_CLASS)["labels"][label]
        if math.isfinite(entry.get("auroc", math.nan)):
            out[f"probe_auroc.{label}"] = float(entry["auroc"])
            out[f"probe_pos.{label}"] = float(entry["n_pos"])
            out[f"probe_neg.{label}"] = float(entry["n_neg"])
    per_label = [v for k, v in out.items() if k.startswith("probe_auroc.")]
    if per_label:
        out["probe_auroc"] = float(np.mean(per_label))
    return out


def linear_probe(encoder: nn.Module, probe: ProbeSet, folds: int = 5, seed: int = 0) -> dict[str, float]:
    # the windows are z-scored already (LabelledWindows)
    return probe_scores(embed(encoder, probe.x, batch_size=128, normalize=False), probe, folds, seed)
