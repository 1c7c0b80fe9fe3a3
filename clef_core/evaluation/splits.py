"""Patient-grouped splits: every window of a subject (or MIT-BIH record) lands on one side only,
so a probe is never scored on a patient it was fitted on.

Groups are assigned to folds stratified by whether the group holds any positive (as
scikit-learn's StratifiedGroupKFold does for binary labels), so rare labels are spread over
the folds instead of landing in one.
"""

from __future__ import annotations

import numpy as np


def _group_strata(groups: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    unique, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    stratum = np.zeros(len(unique), dtype=np.int64)
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        y = y[:, None] if y.ndim == 1 else y
        # a group's stratum: the bit pattern of the labels it has a positive of (capped at 8 labels)
        for j in range(min(y.shape[1], 8)):
            has = np.zeros(len(unique), dtype=bool)
            np.logical_or.at(has, inverse, np.nan_to_num(y[:, j]) > 0.5)
            stratum |= has.astype(np.int64) << j
    return unique, inverse, stratum


def group_folds(groups: np.ndarray, k: int, seed: int = 0, y: np.ndarray | None = None) -> list[np.ndarray]:
    """Row indices of the test side of ``k`` folds that never split a group; groups are dealt
    round-robin within strata of ``y`` (N,) or (N, C) (a group's positives). Empty folds are dropped."""
    if k < 2:
        raise ValueError(f"group_folds: k must be >= 2, got {k}")
    unique, inverse, stratum = _group_strata(groups, y)
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    start = 0
    for s in np.unique(stratum):
        members = rng.permutation(np.flatnonzero(stratum == s))
        fold_of_group[members] = (start + np.arange(len(members))) % k
        start += len(members)
    fold = fold_of_group[inverse]
    return [np.flatnonzero(fold == f) for f in range(k) if (fold == f).any()]


def group_split(groups: np.ndarray, test_fraction: float, seed: int = 0,
                y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) with about ``test_fraction`` of the groups (per stratum) on the test side."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"group_split: test_fraction must be in (0, 1), got {test_fraction}")
    unique, inverse, stratum = _group_strata(groups, y)
    if len(unique) < 2:
        raise ValueError(f"group_split: need at least 2 groups, got {len(unique)}")
    rng = np.random.default_rng(seed)
    test_group = np.zeros(len(unique), dtype=bool)
    for s in np.unique(stratum):
        members = rng.permutation(np.flatnonzero(stratum == s))
        test_group[members[: int(round(test_fraction * len(members)))]] = True
    if test_group.all() or not test_group.any():  # tiny inputs: force both sides non-empty
        test_group[:] = False
        test_group[rng.permutation(len(unique))[: max(1, int(round(test_fraction * len(unique))))]] = True
    test = test_group[inverse]
    return np.flatnonzero(~test), np.flatnonzero(test)
