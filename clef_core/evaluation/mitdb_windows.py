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


def record_cv_scores(emb: np.ndarray, y: np.ndarray, groups: np.ndarray, l2: float, folds: int = 5, seed: int = 0,
                     fraction: float = 1.0, subsample: int = 0, l2_grid: Sequence[float] | None = None) -> np.ndarray:
    """Out-of-fold logistic probe scores (N, C), folds by record (:func:`group_folds`, stratified by
    the records' positives), features standardised on each fold's training rows. With ``fraction`` < 1
    each fold's probe is fitted on that share of its training windows, a uniform draw seeded by
    (``seed``, ``subsample``, fold): every encoder scored with the same arguments sees the same
    labelled windows, so differences between encoders are paired. With ``l2_grid`` each fold's L2 is
    chosen per label by :func:`select_l2` on that fold's labelled windows only (``l2`` the fallback)."""
    from clef_core.evaluation.splits import group_folds

    if not 0 < fraction <= 1:
        raise ValueError(f"record_cv_scores: fraction must lie in (0, 1], got {fraction}")
    x = np.asarray(emb, np.float64)
    scores = np.full(y.shape, np.nan)
    for k, test_rows in enumerate(group_folds(groups, folds, seed, y)):
        train = np.setdiff1d(np.arange(len(x)), test_rows)
        if fraction < 1:
            rng = np.random.default_rng([seed, subsample, k, 0x3D8])
            train = np.sort(rng.choice(train, max(int(np.ceil(fraction * len(train))), 2), replace=False))
        fold_l2 = l2 if l2_grid is None else select_l2(x[train], y[train], groups[train], l2_grid, l2, folds, seed)
        scores[test_rows] = fit_and_score(x[train], y[train], x[test_rows], fold_l2)
    return scores


def fit_and_score(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, l2: float | np.ndarray) -> np.ndarray:
    """Scores (M, C) of ``x_score`` by one logistic probe per label fitted on (``x_fit``, ``y_fit``) (mean BCE +
    l2/(2n) ||w||^2 on features standardised with the fitted rows' mean and SD); ``l2`` one value or one per label."""
    from clef_core.evaluation.label_efficiency import fit_logistic_grid

    x_fit = np.asarray(x_fit, np.float64)
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    per_label = np.broadcast_to(np.asarray(l2, np.float64), (y_fit.shape[1],))
    values, which = np.unique(per_label, return_inverse=True)
    W, b = fit_logistic_grid((x_fit - mean) / std, y_fit, values.tolist())
    cols = np.arange(y_fit.shape[1])
    return ((np.asarray(x_score, np.float64) - mean) / std) @ W[which, cols].T + b[which, cols]


def select_l2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, l2_grid: Sequence[float], fallback: float,
              folds: int = 5, seed: int = 0) -> np.ndarray:
    """The L2 (C,) per label of ``l2_grid`` with the best mean AUROC over ``folds`` inner folds by record
    (:func:`group_folds`) of the labelled windows (``x``, ``y``, ``groups``) alone, each inner probe as
    :func:`fit_and_score`'s; ties go to the stronger L2. ``fallback`` for a label that some inner fold cannot
    fit or score (one class on either side) or when the windows hold fewer than two records."""
    from clef_core.evaluation.label_efficiency import fit_logistic_grid, weighted_auroc
    from clef_core.evaluation.splits import group_folds

    grid = np.sort(np.asarray(l2_grid, np.float64))  # ascending, so that ties can go to the stronger L2
    chosen = np.full(y.shape[1], float(fallback))
    inner = group_folds(groups, folds, seed, y) if len(np.unique(groups)) >= 2 else []
    if len(inner) < 2:
        return chosen
    auc = np.zeros((len(grid), y.shape[1]))
    usable = np.ones(y.shape[1], bool)
    for rows in inner:
        train = np.setdiff1d(np.arange(len(x)), rows)
        for c in range(y.shape[1]):
            usable[c] &= len(np.unique(y[train, c])) == 2 and len(np.unique(y[rows, c])) == 2
        if not usable.any():
            return chosen
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        W, b = fit_logistic_grid((x[train] - mean) / std, y[train], grid.tolist())
        s = np.einsum("nd,gcd->gnc", (x[rows] - mean) / std, W) + b[:, None, :]
        for c in np.flatnonzero(usable).tolist():
            auc[:, c] += [weighted_auroc(s[g, :, c], y[rows, c])[0] for g in range(len(grid))]
    for c in np.flatnonzero(usable).tolist():
        best = len(grid) - 1 - int(np.argmax(auc[::-1, c]))  # ties: the later (stronger) grid value
        chosen[c] = grid[best]
    return chosen


def label_aurocs(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """AUROC per :data:`WINDOW_LABELS` column; NaN for a label whose positives sit in fewer than two
    records (record-grouped cross-validation cannot both fit and score it)."""
    from clef_core.evaluation.label_efficiency import weighted_auroc

    out = {}
    for k, name in enumerate(WINDOW_LABELS):
        pos_records = len(np.unique(groups[y[:, k] == 1]))
        out[name] = float(weighted_auroc(scores[:, k], y[:, k])[0]) if pos_records >= 2 else float("nan")
    return out


def record_cv_auroc(emb: np.ndarray, y: np.ndarray, groups: np.ndarray, l2: float, folds: int = 5, seed: int = 0
                    ) -> dict[str, float]:
    """Per-label AUROC of :func:`record_cv_scores` (pooled out-of-fold scores); NaN for a label whose
    positives sit in fewer than two records (no split can both fit and score it)."""
    return label_aurocs(record_cv_scores(emb, y, groups, l2, folds, seed), y, groups)
