r"""The CLEF loss (clinically weighted InfoNCE + similarity alignment) and NT-Xent.

Source: shared/reference/clef-method.md (CLEF, arXiv 2512.02180, and its reference code
Nokia-Bell-Labs/ecg-foundation-model ``clef/lightning/lightning_contrastive.py``).

Notation: a batch of N patients, ``z`` (2N, d) with rows i and i+N the two views of patient i;
p(i) = (i + N) mod 2N is the positive of anchor i; s_ij = cos(z_i, z_j); S the 2N x 2N matrix of
s_ij; r_i the SCORE2 risk (NaN = unknown); rho_i in [0, 1] the completeness of patient i's metadata.

Clinical weights (N x N), see :func:`clinical_weights`::

    delta_ik = (r_i - r_k)^2 / max_{a != b, r_a and r_b known} (r_a - r_b)^2    (0 when that max is 0)
             = |q_i - q_k|  with ``risk_scaling="rank"``: q = (average rank - 1) / (n_known - 1) of the
               batch's known risks (robust to outlying risks; uniform on [0, 1] whatever the risk scale)
    D_ik     = ((1 - alpha) delta_ik + alpha)^gamma   for i != k with both risks known (gamma = ``weight_power``,
                                                    1 in the paper; > 1 sharpens the weighting)
             = 1                               for i != k with a risk unknown (plain negative; ``unknown_weight="one"``,
                                               the paper)
             = mean of D over the batch's pairs i != k with both risks known   (``unknown_weight="mean"``; 1 when
                                               the batch has no such pair)
    D_ii     = 0
    M_ik     = exp(-rho_i rho_k)                (the paper's direction: two complete patients -> e^-1)
    W        = D * M  (use_mask)  or  D

With ``unknown_weight="one"`` a pair with an unknown risk weighs more than any known pair (D = 1 is the
ceiling of the known pairs' D): the weights then encode which records lack metadata rather than risk,
and a placebo that shuffles risk among known records keeps that structure. ``"mean"`` gives such a pair
the weight of an average known pair, so only the known risks move the weights (not in the paper).

W~ is W tiled to 2N x 2N (W~_ab = W_{a mod N, b mod N}), so self and positive entries are W_ii = 0.

Weighted InfoNCE (anchor i)::

    L_w(i) = -log( e^{s_ip/tau} / (e^{s_ip/tau} + sum_{k != i, p(i)} w_ik e^{s_ik/tau}) ),  L_w = mean_i L_w(i)

with w = W~ (``weight_norm="none"``, the paper's plain form) or, as in the reference code
(``weight_norm="softmax"``, the default), each row of W~ passed through a softmax over all 2N columns:
w_ik = exp(W~_ik) / sum_{j=1..2N} exp(W~_ij). Self and positive take part in that softmax with their
value W~ = 0 (each contributes exp(0) = 1 to the denominator), but their resulting weights are never
used: the positive enters unweighted, the anchor itself not at all. Because a softmax row sums to 1,
the 2N-2 negatives of an anchor share a total weight below 1, where NT-Xent gives them 2N-2; this is
what the published models were trained with (the reference also applies the softmax to the tiled W).
A repair (``weight_norm="mean_one"``, not in the paper): w_ik = W~_ik / mean_{j neg of i} W~_ij, so each
anchor's negatives keep NT-Xent's total mass 2N-2 and the ratios of W (a softmax of values in [0, 1]
keeps every weight within e^1 = 2.7x of any other, and in practice within ~1.35x).
Computed in log space as L_w(i) = softplus(logsumexp_k(log w_ik + (s_ik - s_ip)/tau)); w = 0 drops out.

Alignment::

    L_d = mean_{(a, b) defined} ( minmax(S)_ab - (1 - W~_ab) )^2,   minmax(S) = (S - min S) / (max S - min S)

min/max over the whole 2N x 2N S (minmax(S) = 0 when every s is equal); "defined" = same patient (self,
positive: target 1) or both risks known; a pair with an unknown risk has no target.

Total: L = (L_w + lambda L_d) / (1 + lambda), lambda = ``align_weight`` (reference: lambda = 1).

NT-Xent (SimCLR): L(i) = -log( e^{s_ip/tau} / sum_{k != i} e^{s_ik/tau} ) = CLEF with alpha = 1, no mask,
``weight_norm="none"``, lambda = 0.

Edge cases: N = 1 has no negatives, so L_w = 0 (the positive is its own whole denominator) and L_d is
the alignment of the 2 x 2 block; an empty batch is an error. Half-precision embeddings are upcast to
float32 and autocast is switched off inside (the loss is computed in float32 or float64).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

WEIGHT_NORMS = ("softmax", "none", "mean_one")
RISK_SCALINGS = ("minmax", "rank")
UNKNOWN_WEIGHTS = ("one", "mean")

TensorLike = torch.Tensor | Sequence[float]


def clef_loss(
    z: torch.Tensor,
    risk: TensorLike,
    completeness: TensorLike | None,
    *,
    tau: float = 0.07,
    alpha: float = 0.2,
    use_mask: bool = True,
    weight_norm: str = "softmax",
    align_weight: float = 1.0,
    risk_scaling: str = "minmax",
    unknown_weight: str = "one",
    weight_power: float = 1.0,
    check_values: bool = True,
) -> torch.Tensor:
    """(L_w + align_weight * L_d) / (1 + align_weight) of the module docstring, a scalar tensor.

    ``risk`` (N,) SCORE2 risk, NaN when unknown; ``completeness`` (N,) in [0, 1] (may be None only
    when ``use_mask`` is False). ``check_values=False``: the caller checked them with
    :func:`check_targets` before moving them to the device (the check reads the values, which on
    a GPU is a host synchronisation).
    """
    _check_options(tau=tau, alpha=alpha, weight_norm=weight_norm, align_weight=align_weight, risk_scaling=risk_scaling,
                   unknown_weight=unknown_weight, weight_power=weight_power)
    with _autocast_off(z):
        z, n = _embeddings(z, "clef_loss")
        risk_t = _vector(risk, n, "risk", z)
        if use_mask and completeness is None:
            raise ValueError("clef_loss: completeness is required when use_mask=True")
        rho = _vector(completeness, n, "completeness", z) if use_mask and completeness is not None else None
        if check_values:
            check_targets(risk_t, rho)
        weights, defined = clinical_weights(risk_t, rho, alpha=alpha, risk_scaling=risk_scaling,
                                            unknown_weight=unknown_weight, weight_power=weight_power)
        sim = cosine_matrix(z)
        tiled, tiled_defined = weights.repeat(2, 2), defined.repeat(2, 2)
        l_w = weighted_info_nce(sim, tiled, tau=tau, weight_norm=weight_norm)
        if align_weight == 0:
            return l_w
        l_d = alignment_loss(sim, tiled, tiled_defined)
        return (l_w + align_weight * l_d) / (1 + align_weight)


def check_targets(risk: torch.Tensor, completeness: torch.Tensor | None) -> None:
    """Refuse an infinite risk (unknown is NaN) and a completeness outside [0, 1] (or NaN)."""
    if bool(torch.isinf(risk).any()):
        raise ValueError("clef_loss: risk holds +-inf (unknown risks must be NaN)")
    if completeness is not None and not bool(((completeness >= 0) & (completeness <= 1)).all()):
        raise ValueError("clef_loss: completeness must lie in [0, 1] (no NaN)")


def nt_xent(z: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """NT-Xent (SimCLR): mean over the 2N anchors of -log(e^{s_ip/tau} / sum_{k != i} e^{s_ik/tau})."""
    _check_options(tau=tau)
    with _autocast_off(z):
        z, n = _embeddings(z, "nt_xent")
        eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = (cosine_matrix(z) / tau).masked_fill(eye, float("-inf"))
        return F.cross_entropy(logits, positive_index(n, z.device))


def clinical_weights(
    risk: torch.Tensor, completeness: torch.Tensor | None, *, alpha: float = 0.2, risk_scaling: str = "minmax",
    unknown_weight: str = "one", weight_power: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, defined): the N x N weights W = D * M (M omitted when ``completeness`` is None) and the
    mask of pairs whose clinical target is defined (diagonal, or both risks known)."""
    n = risk.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=risk.device)
    known = ~torch.isnan(risk)
    pair_known = known[:, None] & known[None, :]
    zeros = torch.zeros((n, n), dtype=risk.dtype, device=risk.device)
    if risk_scaling == "rank":
        q = batch_quantiles(risk)
        delta = torch.where(pair_known & ~eye, (q[:, None] - q[None, :]).abs(), zeros)
    else:
        r = torch.where(known, risk, torch.zeros_like(risk))
        delta = torch.where(pair_known & ~eye, (r[:, None] - r[None, :]) ** 2, zeros)
        largest = delta.max()
        delta = delta / torch.where(largest > 0, largest, torch.ones_like(largest))
    d_known = ((1 - alpha) * delta + alpha) ** weight_power
    unknown = torch.ones_like(delta)
    if unknown_weight == "mean":
        known_off = pair_known & ~eye
        if bool(known_off.any()):
            unknown = unknown * d_known[known_off].mean()
    d = torch.where(pair_known, d_known, unknown).masked_fill(eye, 0.0)
    if completeness is not None:
        d = d * torch.exp(-completeness[:, None] * completeness[None, :])
    return d, pair_known | eye


def batch_quantiles(risk: torch.Tensor) -> torch.Tensor:
    """(average rank - 1) / (n_known - 1) of each known risk among the known ones (ties share their
    mean rank); 0 for a lone known risk, NaN where the risk is unknown."""
    known = ~torch.isnan(risk)
    vals = risk[known]
    m = vals.shape[0]
    less = (vals[:, None] > vals[None, :]).sum(dim=1).to(risk.dtype)
    ties = (vals[:, None] == vals[None, :]).sum(dim=1).to(risk.dtype)
    q = (less + (ties - 1) / 2) / max(m - 1, 1)
    out = torch.full_like(risk, float("nan"))
    out[known] = q
    return out


def cosine_matrix(z: torch.Tensor) -> torch.Tensor:
    """S_ij = z_i . z_j / (|z_i| |z_j|) (a zero row gives similarity 0)."""
    unit = F.normalize(z, dim=1)
    return unit @ unit.T


def positive_index(n: int, device: torch.device) -> torch.Tensor:
    """p(i) = (i + N) mod 2N."""
    return (torch.arange(2 * n, device=device) + n) % (2 * n)


def weighted_info_nce(sim: torch.Tensor, tiled_w: torch.Tensor, *, tau: float, weight_norm: str) -> torch.Tensor:
    """L_w of the module docstring from the 2N x 2N cosine matrix and tiled weights W~."""
    two_n = sim.shape[0]
    pos = positive_index(two_n // 2, sim.device)
    rows = torch.arange(two_n, device=sim.device)
    is_pos = pos[:, None] == rows[None, :]
    is_neg = ~(is_pos | torch.eye(two_n, dtype=torch.bool, device=sim.device))
    log_w = log_weights(tiled_w, weight_norm)
    # L_w(i) = log(1 + sum_k w_ik e^{(s_ik - s_ip)/tau}) = softplus(logsumexp_k(log w_ik + (s_ik - s_ip)/tau)):
    # accurate for tiny losses (no lse - logit cancellation). Absent terms get the most negative finite
    # value, not -inf, so a row without negatives (N = 1, all w = 0) gives softplus(~-inf) = 0 with a
    # zero gradient instead of NaN.
    shifted = (sim - sim[rows, pos][:, None]) / tau
    absent = torch.full_like(shifted, torch.finfo(shifted.dtype).min)
    terms = torch.where(is_neg & (log_w > float("-inf")), log_w + shifted, absent)
    return F.softplus(torch.logsumexp(terms, dim=1)).mean()


def log_weights(tiled_w: torch.Tensor, weight_norm: str) -> torch.Tensor:
    """log w_ik, the weight each anchor i gives negative k (``weight_norm`` of the module docstring);
    w = 0 gives -inf (drops out). Entries on the diagonal and the positive are not meaningful."""
    if weight_norm == "softmax":
        return torch.log_softmax(tiled_w, dim=1)
    if weight_norm == "mean_one":
        two_n = tiled_w.shape[0]
        pos = positive_index(two_n // 2, tiled_w.device)
        is_neg = ~((pos[:, None] == torch.arange(two_n, device=tiled_w.device)[None, :])
                   | torch.eye(two_n, dtype=torch.bool, device=tiled_w.device))
        neg_mean = torch.where(is_neg, tiled_w, torch.zeros_like(tiled_w)).sum(dim=1) / max(two_n - 2, 1)
        return torch.log(tiled_w) - torch.log(neg_mean.clamp_min(torch.finfo(tiled_w.dtype).tiny))[:, None]
    return torch.log(tiled_w)


def alignment_loss(sim: torch.Tensor, tiled_w: torch.Tensor, tiled_defined: torch.Tensor) -> torch.Tensor:
    """L_d of the module docstring: MSE between minmax(S) and 1 - W~ over the defined entries."""
    low, span = sim.min(), sim.max() - sim.min()
    scaled = (sim - low) / torch.where(span > 0, span, torch.ones_like(span))
    err = torch.where(tiled_defined, (scaled - (1 - tiled_w)) ** 2, torch.zeros_like(sim))
    return err.sum() / tiled_defined.sum()


# ----------------------------------------------------------------------------- input handling


def _embeddings(z: torch.Tensor, who: str) -> tuple[torch.Tensor, int]:
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{who}: z must be a (2N, d) tensor, got {shape}")
    if z.shape[0] == 0 or z.shape[0] % 2:
        raise ValueError(f"{who}: z must hold 2N >= 2 rows (two views per patient), got {z.shape[0]}")
    if not z.is_floating_point():
        raise ValueError(f"{who}: z must be floating point, got {z.dtype}")
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return z, z.shape[0] // 2


def _vector(values: TensorLike, n: int, name: str, like: torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        t = values.to(device=like.device, dtype=like.dtype)
    else:  # straight to the compute dtype: python floats must not pass through float32
        t = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=like.dtype, device=like.device)
    if t.shape != (n,):
        raise ValueError(f"clef_loss: {name} must have shape ({n},) for {2 * n} embeddings, got {tuple(t.shape)}")
    return t


def _check_options(*, tau: float, alpha: float = 0.0, weight_norm: str = "none", align_weight: float = 0.0,
                   risk_scaling: str = "minmax", unknown_weight: str = "one", weight_power: float = 1.0) -> None:
    if unknown_weight not in UNKNOWN_WEIGHTS:
        raise ValueError(f"loss: unknown_weight={unknown_weight!r} is unknown ({' | '.join(UNKNOWN_WEIGHTS)})")
    if not (math.isfinite(weight_power) and weight_power > 0):
        raise ValueError(f"loss: weight_power={weight_power!r} must be > 0")
    if risk_scaling not in RISK_SCALINGS:
        raise ValueError(f"loss: risk_scaling={risk_scaling!r} is unknown ({' | '.join(RISK_SCALINGS)})")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"loss: tau={tau!r} must be > 0")
    if not 0 <= alpha <= 1:
        raise ValueError(f"loss: alpha={alpha!r} must lie in [0, 1]")
    if weight_norm not in WEIGHT_NORMS:
        raise ValueError(f"loss: weight_norm={weight_norm!r} is unknown ({' | '.join(WEIGHT_NORMS)})")
    if not (math.isfinite(align_weight) and align_weight >= 0):
        raise ValueError(f"loss: align_weight={align_weight!r} must be >= 0")


def _autocast_off(z: torch.Tensor) -> contextlib.AbstractContextManager:
    """Mixed precision would run the similarity matmul in half precision: keep the loss in fp32."""
    device_type = z.device.type if isinstance(z, torch.Tensor) else "cpu"
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
