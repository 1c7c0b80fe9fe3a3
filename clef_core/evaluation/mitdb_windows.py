"""MIT-BIH recast as 10 s window tasks a whole-window encoder can answer (issue 12, item 4).

Beat classification asks which beat sits in the centre of a window, which a pooled encoder cannot
see (docs/evaluation.md, "MIT-BIH"). Here every window gets window-level labels instead:

* ``any_pvc``: at least one V beat (AAMI V = {V, E}) annotated inside the window;
* ``any_sveb``: at least one S beat (AAMI S = {A, a, J, S});
* ``af``: at least half of the window in atrial fibrillation (rhythm annotation ``(AFIB``;
  :func:`clef_core.evaluation.mitdb.rhythm_share`).

The MLII lead is resampled to the model rate and band-passed over the whole record (as the beat
task and the store do), then cut into windows of ``cfg.window_s`` every ``stride_s`` seconds.
Windows are grouped by record, so any split by group is a split by patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clef_core.data.preprocess import PreprocessConfig
from clef_core.evaluation.mitdb import aami_class, model_rate, read_lead, rhythm_share

WINDOW_LABELS = ("any_pvc", "any_sveb", "af")


def load_windows(records: Sequence[Path], cfg: PreprocessConfig, stride_s: float = 30.0, lead: str = "II"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (N, T) mV, y (N, 3) 0/1 for :data:`WINDOW_LABELS`, groups (N,) record names)."""
    xs, ys, groups = [], [], []
    T = cfg.window_samples
    for path in records:
        rec, signal, ann = read_lead(path, lead)
        x = model_rate(signal, rec.fs, cfg)
        starts = np.arange(0, len(x) - T + 1, max(int(round(stride_s * cfg.sample_rate)), 1))
        xs.append(x[starts[:, None] + np.arange(T)[None, :]].astype(np.float32))
        scale = rec.fs / cfg.sample_rate  # model-rate sample -> record sample
        rec_starts, rec_len = np.rint(starts * scale).astype(np.int64), int(round(T * scale))
        classes = np.array([aami_class(s) or "" for s in ann.symbol])
        y = np.zeros((len(starts), len(WINDOW_LABELS)), np.float32)
        for k, cls in ((0, "V"), (1, "S")):
            beats = np.sort(ann.sample[classes == cls])
            y[:, k] = (np.searchsorted(beats, rec_starts + rec_len) - np.searchsorted(beats, rec_starts)) > 0
        n_rec = int(round(len(x) * scale))
        y[:, 2] = rhythm_share(ann.rhythm_changes, n_rec, rec_starts, rec_len) >= 0.5
        ys.append(y)
        groups.append(np.full(len(starts), rec.name))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


def record_cv_auroc(emb: np.ndarray, y: np.ndarray, groups: np.ndarray, l2: float, folds: int = 5, seed: int = 0
                    ) -> dict[str, float]:
    """Per-label AUROC of a logistic probe scored by record-grouped K-fold CV (pooled out-of-fold
    scores; features standardised on each fold's training rows). NaN for a label whose positives
    sit in fewer than two records (no split can both fit and score it)."""
    from clef_core.evaluation.label_efficiency import fit_logistic_grid, weighted_auroc
    from clef_core.evaluation.splits import group_folds

    x = np.asarray(emb, np.float64)
    scores = np.full(y.shape, np.nan)
    for test_rows in group_folds(groups, folds, seed, y):
        train = np.ones(len(x), bool)
        train[test_rows] = False
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        xs = (x - mean) / np.where(std > 1e-8, std, 1.0)
        W, b = fit_logistic_grid(xs[train], y[train], [l2])
        scores[test_rows] = xs[test_rows] @ W[0].T + b[0]
    out = {}
    for k, name in enumerate(WINDOW_LABELS):
        pos_records = len(np.unique(groups[y[:, k] == 1]))
        out[name] = float(weighted_auroc(scores[:, k], y[:, k])[0]) if pos_records >= 2 else float("nan")
    return out
