"""Does the clinical weighting act on a batch? Statistics of CLEF's negative weights.

For one batch of N patients (risk r, NaN when unknown; completeness rho) and a loss setting:

* ``risk_known``: share of patients with a risk; ``pairs_with_risk``: share of the N(N-1)/2 patient
  pairs where both risks are known (only those pairs carry risk information).
* ``weight_ratio`` (max / min) and ``weight_cv`` (SD / mean) of the weights w_ik anchors give their
  negatives (after the row softmax, mean-one normalisation or none; :func:`clef_core.loss.log_weights`),
  over anchor i and negative k in the first view block (i != k).
* ``mean_w_known_known`` / ``mean_w_known_unknown`` / ``mean_w_unknown_unknown``: mean w_ik over the
  pairs of each type (both risks known, one, none). Unknown pairs weighing more than known ones
  means the weights reward missing metadata.
* ``spearman_w_riskdiff``: Spearman rho of w_ik vs |r_i - r_k| over pairs with both risks known (the
  intended dependence); ``spearman_w_completeness``: rho of w_ik vs rho_i rho_k over all pairs
  (a dependence on record keeping rather than on the patient).
* ``grad_cosine_placebo``: cosine between dL/dz with the true (risk, completeness) and with them
  permuted among the batch's patients (the ``all`` placebo, :mod:`clef_core.placebo`), for
  embeddings z; ``grad_cosine_placebo_known``: the same for the ``known`` placebo (risks shuffled
  among known-risk patients, missingness kept). Near 1: the risk values barely change the
  training signal. Most of any of these gradients is NT-Xent's (the positives and the pairs
  without risk, 1 - ``pairs_with_risk`` of them), so this cosine stays near 1 whatever the weights;
  hence also:
* ``clinical_cosine_placebo`` / ``clinical_cosine_placebo_known``: the same cosine between the
  clinical parts g - g_NT-Xent (g_NT-Xent: the NT-Xent gradient at the same tau and z), i.e. what the
  weighting adds to the contrastive signal. Near 1: that addition is the same with shuffled risks
  (it follows missingness or the alignment term, not risk); near 0: it is specific to the true risks.
* ``grad_change_placebo_known``: ||g_true - g_placebo_known|| / ||g_true||, how much of the gradient
  the true risk values decide.

:func:`diagnose` averages these over batches of a prepared site; ``clef diagnose`` prints them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from clef_core.evaluation.metrics import spearman
from clef_core.loss import clinical_weights, log_weights
from clef_core.placebo import placebo_inputs
from clef_core.train.settings import LossConfig
from clef_core.train.trainer import make_loss, placebo_permutation

GRAD_STATS = ("grad_cosine_placebo", "grad_cosine_placebo_known", "clinical_cosine_placebo",
              "clinical_cosine_placebo_known", "grad_change_placebo_known")
STATS = ("risk_known", "pairs_with_risk", "weight_ratio", "weight_cv", "mean_w_known_known",
         "mean_w_known_unknown", "mean_w_unknown_unknown", "spearman_w_riskdiff", "spearman_w_completeness") + GRAD_STATS


def effective_weights(risk: torch.Tensor, completeness: torch.Tensor, cfg: LossConfig) -> np.ndarray:
    """(N, N) w_ik of anchor i's first view for patient k's first view (diagonal NaN)."""
    n = risk.shape[0]
    if cfg.kind == "ntxent":
        w = np.ones((n, n))
    else:
        weights, _ = clinical_weights(risk.double(), completeness.double() if cfg.use_mask else None,
                                      alpha=cfg.alpha, risk_scaling=cfg.risk_scaling,
                                      unknown_weight=cfg.unknown_weight, weight_power=cfg.weight_power)
        w = torch.exp(log_weights(weights.repeat(2, 2), cfg.weight_norm))[:n, :n].numpy()
    w = w.astype(np.float64)
    np.fill_diagonal(w, np.nan)
    return w


def batch_diagnostics(risk: torch.Tensor, completeness: torch.Tensor, cfg: LossConfig,
                      z: torch.Tensor | None = None, *, seed: int = 0, step: int = 0) -> dict[str, float]:
    """The statistics of the module docstring for one batch (``z`` (2N, d) for the gradient cosine)."""
    risk, completeness = torch.as_tensor(risk, dtype=torch.float64), torch.as_tensor(completeness, dtype=torch.float64)
    n = risk.shape[0]
    known = ~torch.isnan(risk).numpy()
    iu = np.triu_indices(n, 1)
    w = effective_weights(risk, completeness, cfg)
    off = ~np.eye(n, dtype=bool)
    vals = w[off]
    pair_known = (known[:, None] & known[None, :])[iu]
    r = risk.numpy()
    w_pairs = w[iu]
    n_known = (known[:, None].astype(int) + known[None, :].astype(int))[iu]
    out = {
        "risk_known": float(known.mean()),
        "pairs_with_risk": float(pair_known.mean()) if len(pair_known) else math.nan,
        "weight_ratio": float(vals.max() / vals.min()) if vals.size and vals.min() > 0 else math.inf,
        "weight_cv": float(vals.std() / vals.mean()) if vals.size else math.nan,
        **{f"mean_w_{name}": float(w_pairs[n_known == k].mean()) if (n_known == k).any() else math.nan
           for name, k in (("known_known", 2), ("known_unknown", 1), ("unknown_unknown", 0))},
        "spearman_w_riskdiff": (spearman(w_pairs[pair_known], np.abs(r[:, None] - r[None, :])[iu][pair_known])
                                if pair_known.sum() >= 3 else math.nan),
        "spearman_w_completeness": spearman(w_pairs, np.outer(completeness.numpy(), completeness.numpy())[iu]),
        **{k: math.nan for k in GRAD_STATS},
    }
    if z is not None:
        out.update(placebo_gradients(z, risk, completeness, cfg, placebo_permutation(n, seed, step)))
    return out


def placebo_gradients(z: torch.Tensor, risk: torch.Tensor, completeness: torch.Tensor, cfg: LossConfig,
                      perm: torch.Tensor) -> dict[str, float]:
    """The gradient statistics of the module docstring (``grad_*``, ``clinical_*``) for embeddings ``z``
    and the placebo permutation ``perm``."""
    cos = torch.nn.functional.cosine_similarity
    g_true = _loss_grad(z, risk, completeness, cfg)
    g_nt = _loss_grad(z, risk, completeness, LossConfig(kind="ntxent", tau=cfg.tau))
    out = {}
    for suffix, scope in (("", "all"), ("_known", "known")):
        g_perm = _loss_grad(z, *placebo_inputs(risk, completeness, perm, scope), cfg)
        out[f"grad_cosine_placebo{suffix}"] = float(cos(g_true, g_perm, dim=0))
        clinical = (g_true - g_nt, g_perm - g_nt)
        present = min(float(c.norm()) for c in clinical) > 1e-9 * float(g_true.norm())  # else all weights equal
        out[f"clinical_cosine_placebo{suffix}"] = float(cos(*clinical, dim=0)) if present else math.nan
        if scope == "known":
            out["grad_change_placebo_known"] = float((g_true - g_perm).norm() / g_true.norm())
    return out


def _loss_grad(z: torch.Tensor, risk: torch.Tensor, completeness: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    zz = z.detach().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(make_loss(cfg)(zz, risk, completeness), zz)
    return grad.flatten()


def diagnose(batches: Iterable[dict[str, Any]], settings: dict[str, LossConfig], encoder: torch.nn.Module | None = None,
             *, max_batches: int = 10, seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean of each statistic over at most ``max_batches`` PretrainDataset batches, per named loss
    setting (NaN statistics of a batch, e.g. fewer than 3 known pairs, are left out of the mean)."""
    sums: dict[str, dict[str, list[float]]] = {name: {k: [] for k in STATS} for name in settings}
    for b, batch in enumerate(batches):
        if b >= max_batches:
            break
        z = None
        if encoder is not None:
            with torch.no_grad():
                z = encoder(torch.cat([batch["view1"], batch["view2"]])).float()
        for name, cfg in settings.items():
            stats = batch_diagnostics(batch["risk"], batch["completeness"], cfg, z, seed=seed, step=b)
            for k, v in stats.items():
                if math.isfinite(v):
                    sums[name][k].append(v)
    return {name: {k: (float(np.mean(v)) if v else math.nan) for k, v in per.items()} for name, per in sums.items()}
