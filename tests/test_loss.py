"""CLEF loss against the method note's formulas written out by hand (python loops), NT-Xent, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clef_core.loss import clef_loss, clinical_weights, nt_xent

NAN = float("nan")


# ----------------------------------------------------------------------------- the formulas, by hand


def reference_clef(z, risk, rho, *, tau, alpha, use_mask, weight_norm, align_weight):
    """The method note's loss with explicit loops (float64 python), independent of the module."""
    z = np.asarray(z, dtype=np.float64)
    two_n = len(z)
    n = two_n // 2
    s = [[float(z[a] @ z[b] / (np.linalg.norm(z[a]) * np.linalg.norm(z[b]))) for b in range(two_n)] for a in range(two_n)]
    known = [not math.isnan(r) for r in risk]
    both = [[known[i] and known[k] for k in range(n)] for i in range(n)]
    diffs = [(risk[i] - risk[k]) ** 2 for i in range(n) for k in range(n) if i != k and both[i][k]]
    largest = max(diffs, default=0.0)
    w = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for k in range(n):
            if i == k:
                d = 0.0
            elif both[i][k]:
                delta = (risk[i] - risk[k]) ** 2 / largest if largest > 0 else 0.0
                d = (1 - alpha) * delta + alpha
            else:
                d = 1.0
            m = math.exp(-rho[i] * rho[k]) if use_mask else 1.0
            w[i][k] = d * m
    wt = [[w[a % n][b % n] for b in range(two_n)] for a in range(two_n)]
    if weight_norm == "softmax":
        weights = [[math.exp(wt[a][b]) / sum(math.exp(x) for x in wt[a]) for b in range(two_n)] for a in range(two_n)]
    else:
        weights = wt
    l_w = 0.0
    for a in range(two_n):
        p = (a + n) % two_n
        num = math.exp(s[a][p] / tau)
        den = num + sum(weights[a][k] * math.exp(s[a][k] / tau) for k in range(two_n) if k not in (a, p))
        l_w += -math.log(num / den) / two_n
    flat = [x for row in s for x in row]
    lo, hi = min(flat), max(flat)
    sq, count = 0.0, 0
    for a in range(two_n):
        for b in range(two_n):
            if a % n == b % n or both[a % n][b % n]:
                scaled = (s[a][b] - lo) / (hi - lo) if hi > lo else 0.0
                sq += (scaled - (1 - wt[a][b])) ** 2
                count += 1
    l_d = sq / count
    return (l_w + align_weight * l_d) / (1 + align_weight)


Z2 = [[1.0, 0.2], [-0.3, 1.0], [0.8, 0.5], [-0.6, 0.7]]  # N=2, d=2
Z3 = [[1.0, 0.2], [-0.3, 1.0], [0.4, -0.9], [0.8, 0.5], [-0.6, 0.7], [0.1, -1.0]]  # N=3, d=2
CASES = [
    (Z2, [0.1, 0.4], [1.0, 0.5]),
    (Z2, [0.1, NAN], [1.0, 0.0]),
    (Z3, [0.05, 0.2, 0.4], [1.0, 0.5, 0.0]),
    (Z3, [0.05, NAN, 0.4], [1.0, 0.3, 0.8]),
    (Z3, [NAN, NAN, NAN], [0.0, 0.0, 1.0]),
]


@pytest.mark.parametrize("weight_norm", ["none", "softmax"])
@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize(("z", "risk", "rho"), CASES)
def test_matches_hand_computed_formulas(z, risk, rho, use_mask, weight_norm):
    opts = dict(tau=0.07, alpha=0.2, use_mask=use_mask, weight_norm=weight_norm)
    for align_weight in (1.0, 0.0, 2.5):
        expected = reference_clef(z, risk, rho, align_weight=align_weight, **opts)
        got64 = clef_loss(torch.tensor(z, dtype=torch.float64), torch.tensor(risk, dtype=torch.float64), rho,
                          align_weight=align_weight, **opts)
        got32 = clef_loss(torch.tensor(z), risk, rho, align_weight=align_weight, **opts)
        assert got64.item() == pytest.approx(expected, rel=1e-10)
        assert got32.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_literal_value_of_a_tiny_case():
    # orthogonal patients, identical views, risks 0 and 1: w = 1 for every negative, alignment exact
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    loss = clef_loss(z, [0.0, 1.0], None, tau=1.0, use_mask=False, weight_norm="none", align_weight=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e) / 2, rel=1e-6)


def test_mask_direction_is_the_papers():
    risk = torch.tensor([0.1, 0.3])
    w, _ = clinical_weights(risk, torch.tensor([1.0, 1.0]), alpha=0.2)
    assert w[0, 1].item() == pytest.approx(math.exp(-1))  # two complete patients: down-weighted
    w, _ = clinical_weights(risk, torch.tensor([1.0, 0.0]), alpha=0.2)
    assert w[0, 1].item() == pytest.approx(1.0)  # one side knows nothing: M = 1
    assert w[0, 0].item() == 0.0 and w[1, 1].item() == 0.0


def test_normalisation_floor_and_unknown_pairs():
    w, defined = clinical_weights(torch.tensor([0.0, 0.1, 0.3, NAN]), None, alpha=0.2)
    # delta / max off-diagonal known delta (0.09); D = 0.8 delta + 0.2; unknown pairs D = 1
    assert w[0, 1].item() == pytest.approx(0.8 * 0.01 / 0.09 + 0.2)
    assert w[0, 2].item() == pytest.approx(1.0) and w[1, 2].item() == pytest.approx(0.8 * 0.04 / 0.09 + 0.2)
    assert w[3, 0].item() == 1.0 and w[3, 3].item() == 0.0
    assert defined.tolist() == [[True, True, True, False], [True, True, True, False],
                                [True, True, True, False], [False, False, False, True]]
    w, _ = clinical_weights(torch.tensor([0.2, 0.2, 0.2]), None, alpha=0.2)
    assert torch.allclose(w, 0.2 * (1 - torch.eye(3)))  # all risks equal: every negative at the floor


def test_missing_risk_is_not_zero():
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    rho = [1.0, 0.4, 1.0]
    missing = clef_loss(z, [0.05, NAN, 0.3], rho)
    as_zero = clef_loss(z, [0.05, 0.0, 0.3], rho)
    assert torch.isfinite(missing) and not torch.isclose(missing, as_zero)


# ----------------------------------------------------------------------------- NT-Xent


def loop_nt_xent(z, tau):
    z = F.normalize(torch.as_tensor(z, dtype=torch.float64), dim=1).tolist()
    two_n, n = len(z), len(z) // 2
    total = 0.0
    for a in range(two_n):
        sims = {k: sum(x * y for x, y in zip(z[a], z[k])) / tau for k in range(two_n) if k != a}
        total += -math.log(math.exp(sims[(a + n) % two_n]) / sum(math.exp(v) for v in sims.values()))
    return total / two_n


def masked_cross_entropy(z, tau):
    s = F.normalize(z, dim=1) @ F.normalize(z, dim=1).T / tau
    two_n = len(z)
    logits = s[~torch.eye(two_n, dtype=torch.bool)].view(two_n, two_n - 1)
    target = torch.tensor([(a + two_n // 2) % two_n - (1 if (a + two_n // 2) % two_n > a else 0) for a in range(two_n)])
    return F.cross_entropy(logits, target)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_nt_xent_matches_independent_implementations(n):
    z = torch.randn(2 * n, 4, generator=torch.Generator().manual_seed(n))
    for tau in (0.07, 0.5):
        assert nt_xent(z, tau).item() == pytest.approx(loop_nt_xent(z, tau), rel=1e-5)
        assert nt_xent(z, tau).item() == pytest.approx(masked_cross_entropy(z, tau).item(), rel=1e-6)


@pytest.mark.parametrize("risk", [[0.1, 0.5, NAN, 0.2], [NAN] * 4, [0.3] * 4])
def test_clef_reduces_to_nt_xent(risk):
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    control = clef_loss(z, risk, [0.0, 0.5, 1.0, 1.0], alpha=1.0, use_mask=False, weight_norm="none", align_weight=0.0)
    assert torch.allclose(control, nt_xent(z, tau=0.07), rtol=1e-6, atol=0)
    weighted = clef_loss(z, risk, [0.0, 0.5, 1.0, 1.0], alpha=1.0, use_mask=True, weight_norm="none", align_weight=0.0)
    assert not torch.allclose(weighted, control)  # the mask changes it (completeness not all 0)


# ----------------------------------------------------------------------------- stability


def _finite_with_grad(z, risk, rho, **opts):
    z = z.clone().requires_grad_(True)
    loss = clef_loss(z, risk, rho, **opts)
    loss.backward()
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(z.grad).all()), loss


@pytest.mark.parametrize("weight_norm", ["none", "softmax"])
@pytest.mark.parametrize(
    ("z", "risk", "rho"),
    [
        (torch.ones(8, 5), [0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 1.0, 1.0]),  # identical embeddings
        (torch.zeros(8, 5), [0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0]),  # zero embeddings
        (torch.randn(2, 5), [0.1], [1.0]),  # one patient
        (torch.randn(2, 5), [NAN], [0.0]),
        (torch.randn(8, 5), [NAN] * 4, [0.0] * 4),  # all risks missing
        (torch.randn(8, 5), [0.2] * 4, [1.0] * 4),  # all risks equal
        (torch.randn(8, 5) * 1e4, [0.0, 1.0, 0.5, NAN], [1.0, 0.0, 1.0, 0.0]),  # large values
    ],
)
def test_stable_edge_cases(z, risk, rho, weight_norm):
    for alpha, tau in ((0.2, 0.07), (0.0, 0.01)):
        ok, _ = _finite_with_grad(z, risk, rho, alpha=alpha, tau=tau, weight_norm=weight_norm)
        assert ok, (alpha, tau)


def test_one_patient_has_no_negatives():
    z = torch.randn(2, 5)
    assert clef_loss(z, [0.1], [1.0], align_weight=0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert nt_xent(z).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_is_finite_and_nonzero():
    z = torch.randn(12, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    clef_loss(z, torch.tensor([0.01, 0.05, NAN, 0.2, 0.1, 0.3]), torch.tensor([1.0, 0.9, 0.3, 1.0, 0.0, 1.0])).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast(dtype):
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(2)).to(dtype)
    risk, rho = [0.1, NAN, 0.3, 0.2], [1.0, 0.2, 1.0, 0.5]
    loss = clef_loss(z, risk, rho)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, clef_loss(z.float(), risk, rho))
    assert nt_xent(z).dtype == torch.float32


def test_autocast_does_not_lower_precision():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(4))
    plain = clef_loss(z, [0.1, 0.2, 0.3, 0.4], [1.0] * 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = clef_loss(z, [0.1, 0.2, 0.3, 0.4], [1.0] * 4)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_value_on_cuda():
    z = torch.randn(8, 16)
    risk, rho = torch.tensor([0.1, NAN, 0.3, 0.2]), torch.tensor([1.0, 0.2, 1.0, 0.5])
    assert torch.allclose(clef_loss(z.cuda(), risk, rho).cpu(), clef_loss(z, risk, rho), rtol=1e-5)


def test_bad_input_is_named():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="2N >= 2 rows"):
        clef_loss(torch.randn(3, 3), [0.1], [1.0])
    with pytest.raises(ValueError, match="2N >= 2 rows"):
        nt_xent(torch.randn(0, 3))
    with pytest.raises(ValueError, match=r"risk must have shape \(2,\)"):
        clef_loss(z, [0.1, 0.2, 0.3], [1.0, 1.0])
    with pytest.raises(ValueError, match="completeness must lie in"):
        clef_loss(z, [0.1, 0.2], [1.0, 1.5])
    with pytest.raises(ValueError, match="completeness is required"):
        clef_loss(z, [0.1, 0.2], None)
    with pytest.raises(ValueError, match="inf"):
        clef_loss(z, [0.1, float("inf")], [1.0, 1.0])
    with pytest.raises(ValueError, match="weight_norm"):
        clef_loss(z, [0.1, 0.2], [1.0, 1.0], weight_norm="l1")
    with pytest.raises(ValueError, match="tau"):
        nt_xent(z, tau=0.0)
    with pytest.raises(ValueError, match="alpha"):
        clef_loss(z, [0.1, 0.2], [1.0, 1.0], alpha=1.5)
