"""Evidence on the embedding itself (what the CLEF reviewers asked for).

* Distance-risk correlation: over all pairs (i, k) of patients whose risk is known, Spearman's
  rho between the cosine distance 1 - cos(z_i, z_k) and |r_i - r_k|. CLEF pushes clinically
  different patients apart, so rho > 0 is the expected sign. Pairs share patients and are not
  independent, so significance comes from a Mantel permutation test: risks are permuted over
  patients and rho recomputed; p = (1 + #{rho_perm >= rho}) / (1 + n_perm) (one-sided).
* Leakage probe: how well age (ridge; MAE, R^2) and sex (logistic; AUROC) are read from the
  embedding by a linear probe in patient-grouped cross-validation. High values mean downstream
  gains may come from demographics carried by the embedding rather than from cardiac features.
* 2-D map: the first two principal components of the (standardised) embeddings.
* Similarity by risk difference: mean cosine similarity of the pairs in quantile bins of
  |r_i - r_k|.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

from clef_core.evaluation.protocol import oof_decisions, score


def _unit(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def pair_table(emb: np.ndarray, risk: np.ndarray, max_patients: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cosine similarity, |risk difference|, patient rows) over the pairs i < k of at most
    ``max_patients`` patients (a seeded draw) with a finite risk."""
    rows = np.flatnonzero(np.isfinite(risk))
    if max_patients and len(rows) > max_patients:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_patients, replace=False))
    u = _unit(emb[rows])
    i, k = np.triu_indices(len(rows), 1)
    sim = np.einsum("ij,ij->i", u[i], u[k])
    return sim, np.abs(risk[rows][i] - risk[rows][k]), rows


def distance_risk_spearman(emb: np.ndarray, risk: np.ndarray, *, max_patients: int = 600, permutations: int = 99,
                           seed: int = 0) -> dict[str, Any]:
    """Spearman rho between cosine distance and |risk difference| over patient pairs, with a
    Mantel permutation p-value (see the module docstring)."""
    sim, diff, rows = pair_table(emb, risk, max_patients, seed)
    out: dict[str, Any] = {"n_patients": int(len(rows)), "n_pairs": int(len(sim)), "rho": math.nan,
                           "p_mantel": math.nan, "permutations": permutations}
    if len(rows) < 3 or np.ptp(diff) == 0:
        return out
    rd = rankdata(1.0 - sim)
    rd = (rd - rd.mean()) / np.linalg.norm(rd - rd.mean())

    def rho_of(d: np.ndarray) -> float:
        r = rankdata(d)
        r = r - r.mean()
        return float(rd @ r / np.linalg.norm(r))

    rho = rho_of(diff)
    rng = np.random.default_rng(seed + 1)
    r = risk[rows]
    i, k = np.triu_indices(len(rows), 1)
    perm_rhos = [rho_of(np.abs(p[i] - p[k])) for p in (rng.permutation(r) for _ in range(permutations))]
    out.update(rho=rho, p_mantel=(1 + sum(v >= rho for v in perm_rhos)) / (1 + permutations) if permutations else math.nan)
    return out


def similarity_by_risk_bins(emb: np.ndarray, risk: np.ndarray, *, bins: int = 8, max_patients: int = 600,
                            seed: int = 0) -> list[dict[str, float]]:
    """Mean, SD and quartiles of cosine similarity per quantile bin of |risk difference| (pairs as
    above). The quartiles stay within [-1, 1]; mean +- SD need not."""
    sim, diff, _ = pair_table(emb, risk, max_patients, seed)
    if len(sim) == 0:
        return []
    edges = np.unique(np.quantile(diff, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, diff, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for b in range(max(len(edges) - 1, 1)):
        s = sim[which == b]
        if len(s):
            out.append({"lo": float(edges[b]), "hi": float(edges[min(b + 1, len(edges) - 1)]), "n_pairs": int(len(s)),
                        "mean_similarity": float(s.mean()), "sd_similarity": float(s.std()),
                        **dict(zip(("q25_similarity", "median_similarity", "q75_similarity"),
                                   map(float, np.quantile(s, [0.25, 0.5, 0.75]))))})
    return out


def leakage_probe(emb: np.ndarray, age: np.ndarray, male: np.ndarray, groups: np.ndarray, *, folds: int = 5,
                  seed: int = 0, l2: float = 100.0, min_per_class: int = 5) -> dict[str, Any]:
    """Age (ridge: MAE, R^2 and the mean predictor's MAE) and sex (logistic: AUROC) read from the
    embedding in grouped cross-validation."""
    out: dict[str, Any] = {}
    ok = np.isfinite(age)
    if ok.sum() >= 2 * folds:
        dec = oof_decisions(emb[ok], age[ok, None], "regression", ["age"], groups[ok], folds=folds, seed=seed, l2=l2)
        out["age"] = score("regression", ["age"], age[ok, None], dec)["labels"]["age"]
    ok = np.isfinite(male)
    if ok.sum() >= 2 * folds:
        dec = oof_decisions(emb[ok], male[ok, None], "binary", ["male"], groups[ok], folds=folds, seed=seed, l2=l2)
        out["sex"] = score("binary", ["male"], male[ok, None], dec, min_per_class=min_per_class)["labels"]["male"]
    return out


def pca_2d(emb: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Coordinates (N, 2) on the first two principal components of the standardised embeddings,
    and the fraction of variance each explains."""
    x = np.asarray(emb, np.float64)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
    if len(x) < 2:
        return np.zeros((len(x), 2)), [math.nan, math.nan]
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2 / max((s**2).sum(), 1e-12)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, [float(v) for v in var[:2]]
