"""What the synthetic cohort's hidden truth (``truth.csv``) gives ``clef study``: the oracle arm's
clinical table and the Bayes ceiling of the label drawn from the hidden factor.

* Oracle: every record's risk is its patient's hidden risk factor h (``risk_factor``,
  :mod:`clef_core.synth.risk_link`), known for every record, with completeness 1: the clinical
  weighting reads the very quantity that shapes the waveform (``synth.risk_signal``) and the
  ``cvd_event`` label, instead of a SCORE2 that is missing for many records and only correlates
  with h. An upper bound on what the weighting can do with this cohort.
* Bayes ceiling: the AUROC of P(cvd_event = 1 | h) = sigmoid(-1.4 + 1.5 h) on the test records,
  the best any score can reach on that label (the label is a coin flip given h).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clef_core.evaluation.label_efficiency import weighted_auroc
from clef_core.synth.risk_link import RISK_LABELS, event_probability

TRUTH_FILE = "truth.csv"


def hidden_factor(root: Path) -> pd.Series:
    """h per subject_id (str) from ``root/truth.csv``; a clear error when the cohort has none."""
    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no truth table (the oracle and the Bayes ceiling need a synthetic cohort)")
    truth = pd.read_csv(path, dtype={"subject_id": str})
    if "risk_factor" not in truth.columns:
        raise ValueError(f"{path}: no risk_factor column (the cohort has no hidden factor: set synth.risk_signal > 0 "
                         "or synth.risk_labels = true)")
    return truth.set_index("subject_id")["risk_factor"].astype(float)


def oracle_site(site: Any) -> Any:
    """``site`` (a PreparedSite of a synthetic cohort) with its clinical table's risk replaced by the
    patient's hidden factor h for every record and completeness 1 (a copy; ``site`` is unchanged)."""
    h = hidden_factor(site.root)
    clinical = site.clinical.copy()
    subjects = clinical["subject_id"].astype(str)
    missing = sorted(set(subjects) - set(h.index))
    if missing:
        raise ValueError(f"{site.root / TRUTH_FILE}: no risk_factor for subject(s) {missing[:5]}")
    clinical["risk"] = h.reindex(subjects).to_numpy()
    clinical["completeness"] = 1.0
    return dataclasses.replace(site, clinical=clinical)


def bayes_ceiling(root: Path, task: Any, rows: np.ndarray) -> dict[str, float]:
    """{label: AUROC of the label's true probability on ``rows`` of ``task``} for the labels drawn
    from h (``cvd_event``) that the task scores; {} when there are none or the truth has no h."""
    labels = [c for c in task.labels if c in RISK_LABELS]
    if not labels:
        return {}
    try:
        h = hidden_factor(root)
    except ValueError:
        return {}
    p = event_probability(h.reindex(task.groups[rows].astype(str)).to_numpy())
    out = {}
    for label in labels:
        y = task.y[rows, task.labels.index(label)]
        keep = np.isfinite(y) & np.isfinite(p)
        out[label] = float(weighted_auroc(p[keep], y[keep])[0]) if keep.any() else math.nan
    return out
