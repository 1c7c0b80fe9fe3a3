r"""The CLEF loss of ONE patient against a public negative bank (the decoupled form used under DP).

The in-batch CLEF loss (:mod:`clef_core.loss`) couples every patient of a batch to every other:
each is a negative of all the others, the risk normalisation takes the batch maximum and the
alignment min-max spans the whole batch. Under DP-SGD that coupling breaks the sensitivity
bound. Here patient i's loss depends only on patient i's two views, risk r_i and completeness
rho_i, the current weights and a bank of B public negatives (embeddings e_k, risks r_k,
completeness rho_k) -- nothing else in the private batch.

Weights (the method's D and M, with the normalisation set S_i = {i} U bank instead of the batch)::

    m_i      = max over known pairs (a, b) of S_i of (r_a - r_b)^2
    delta_ik = (r_i - r_k)^2 / m_i                     (0 when m_i = 0)
    D_ik     = (1 - alpha) delta_ik + alpha            both risks known
             = 1                                       otherwise (plain negative, no alignment target)
    W_ik     = D_ik exp(-rho_i rho_k)  (use_mask)  or  D_ik

This is exactly row 0 of :func:`clef_core.loss.clinical_weights` applied to S_i (tested).

Loss (u_1, u_2 the unit embeddings of the two views, s_ak = u_a . e_k / |e_k|, s_p = u_1 . u_2)::

    L_w(a)  = softplus( logsumexp_k( log w_ik + (s_ak - s_p) / tau ) )      a = 1, 2
    w_ik    = W_ik  ("none")  or  exp(W_ik) / (2 + sum_j exp(W_ij))  ("softmax": the reference's row
              softmax, in which self and positive take part with weight 0 -> exp(0) = 1 each)
    L_d     = mean over defined entries of (minmax(S_i) - (1 - W~))^2, S_i the 2 x (2 + B) matrix
              [[1, s_p, s_1k], [s_p, 1, s_2k]], target 1 on self and positive
    L_i     = (mean_a L_w(a) + lambda L_d) / (1 + lambda)

NT-Xent against the bank is ``W = 1``, ``weight_norm = "none"``, ``lambda = 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bank_weights(
    risk: torch.Tensor,
    completeness: torch.Tensor | None,
    bank_risk: torch.Tensor,
    bank_completeness: torch.Tensor | None,
    *,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (N, B), defined (N, B)) of the module docstring for N patients against B bank entries."""
    known = ~torch.isnan(risk)
    bank_known = ~torch.isnan(bank_risk)
    r = torch.where(known, risk, torch.zeros_like(risk))
    rb = torch.where(bank_known, bank_risk, torch.zeros_like(bank_risk))
    defined = known[:, None] & bank_known[None, :]
    sq = torch.where(defined, (r[:, None] - rb[None, :]) ** 2, torch.zeros((), dtype=risk.dtype))
    bank_pairs = torch.where(bank_known[:, None] & bank_known[None, :], (rb[:, None] - rb[None, :]) ** 2,
                             torch.zeros((), dtype=risk.dtype))
    largest = torch.maximum(sq.max(dim=1).values, bank_pairs.max())
    delta = sq / torch.where(largest > 0, largest, torch.ones_like(largest))[:, None]
    d = torch.where(defined, (1 - alpha) * delta + alpha, torch.ones_like(delta))
    if completeness is not None and bank_completeness is not None:
        d = d * torch.exp(-completeness[:, None] * bank_completeness[None, :])
    return d, defined


def patient_loss(
    z: torch.Tensor,
    bank_z: torch.Tensor,
    weights: torch.Tensor,
    defined: torch.Tensor,
    *,
    tau: float,
    weight_norm: str = "softmax",
    align_weight: float = 1.0,
) -> torch.Tensor:
    """L_i of the module docstring: ``z`` (2, d) the patient's two view embeddings, ``bank_z`` (B, d),
    ``weights``/``defined`` (B,) this patient's row of :func:`bank_weights`."""
    u = F.normalize(z, dim=1)
    e = F.normalize(bank_z, dim=1)
    s_pos = (u[0] * u[1]).sum()
    s_bank = u @ e.T  # (2, B)
    if weight_norm == "softmax":
        log_w = weights - torch.logsumexp(torch.cat([torch.zeros(2, dtype=weights.dtype), weights]), dim=0)
    else:
        log_w = torch.log(weights)
    shifted = (s_bank - s_pos) / tau
    absent = torch.full_like(shifted, torch.finfo(shifted.dtype).min)
    terms = torch.where(log_w > float("-inf"), log_w + shifted, absent)
    l_w = F.softplus(torch.logsumexp(terms, dim=1)).mean()
    if align_weight == 0:
        return l_w
    one = torch.ones((), dtype=s_pos.dtype)
    sim = torch.stack([torch.cat([one[None], s_pos[None], s_bank[0]]), torch.cat([s_pos[None], one[None], s_bank[1]])])
    low, span = sim.min(), sim.max() - sim.min()
    scaled = (sim - low) / torch.where(span > 0, span, torch.ones_like(span))
    target = torch.cat([torch.ones(2, dtype=weights.dtype), 1 - weights])
    mask = torch.cat([torch.ones(2, dtype=torch.bool), defined])
    err = torch.where(mask[None, :], (scaled - target[None, :]) ** 2, torch.zeros_like(scaled))
    l_d = err.sum() / (2 * mask.sum())
    return (l_w + align_weight * l_d) / (1 + align_weight)
